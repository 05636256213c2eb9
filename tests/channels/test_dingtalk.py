"""DingTalk enterprise robot, HTTP callback mode.

DingTalk signs the callback's headers only: `timestamp` (ms) and
`sign = base64(HMAC-SHA256(appSecret, timestamp + "\\n" + appSecret))`,
computed here independently. Replies go to the message's sessionWebhook
while it is valid, else through the robot OpenAPI with an access token."""

from __future__ import annotations

import json
import time

import mockplatform as mp
from harness import CARD_BUTTON, CARD_URL, REPLY, Runtime, uid, wait_for


def headers(ts_ms: int | None = None, secret: str = mp.DT_APP_SECRET, sign: bool = True) -> dict[str, str]:
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    h = {"Content-Type": "application/json; charset=utf-8", "timestamp": ts}
    if sign:
        h["sign"] = mp.dingtalk_sign(secret, ts)
    return h


def message(
    *,
    msg_id: str,
    conversation_id: str,
    staff_id: str,
    group: bool,
    session_webhook: str,
    expires_ms: int,
    text: str = " hello robot",
) -> bytes:
    now = int(time.time() * 1000)
    body = {
        "conversationId": conversation_id,
        "chatbotCorpId": "dingcorp0test",
        "chatbotUserId": "$:LWCP_v1:$robotuser",
        "msgId": msg_id,
        "senderNick": "Zhang San",
        "isAdmin": False,
        "senderStaffId": staff_id,
        "sessionWebhookExpiredTime": expires_ms,
        "createAt": now,
        "senderCorpId": "dingcorp0test",
        "conversationType": "2" if group else "1",
        "senderId": "$:LWCP_v1:$" + staff_id,
        "sessionWebhook": session_webhook,
        "text": {"content": text},
        "robotCode": mp.DT_ROBOT_CODE,
        "msgtype": "text",
    }
    if group:
        body.update(
            conversationTitle="ClawdBot test group",
            isInAtList=True,
            atUsers=[{"dingtalkId": "$:LWCP_v1:$robotuser"}],
        )
    return json.dumps(body).encode()


def session_calls(rt: Runtime, webhook: str) -> list[mp.Call]:
    sid = webhook.rsplit("session=", 1)[1]
    return rt.platform.find("dingtalk.session_webhook", lambda c: c.q("session") == sid)


def batch_sends_to(rt: Runtime, staff_id: str) -> list[mp.Call]:
    def mine(c: mp.Call) -> bool:
        try:
            return c.json().get("userIds") == [staff_id]
        except ValueError:
            return False

    return rt.platform.find("dingtalk.batch_send", mine)


def test_group_message_is_answered_on_the_session_webhook_with_an_at(runtime: Runtime) -> None:
    staff, msg_id = uid("staff"), uid("msg")
    words = f"hello robot {uid()}"
    webhook = runtime.platform.session_webhook(int(time.time() * 1000) + 90 * 60 * 1000)
    body = message(
        msg_id=msg_id, conversation_id=uid("cid"), staff_id=staff, group=True,
        session_webhook=webhook, expires_ms=int(time.time() * 1000) + 90 * 60 * 1000,
        text=f"@ClawdBot {words}",
    )
    r = runtime.post("/webhooks/dingtalk", body, headers())
    assert r.status == 200, r
    calls = wait_for(lambda: session_calls(runtime, webhook), "a reply on the session webhook", context=runtime.platform.dump)
    call = calls[0]
    assert not call.problems, f"DingTalk would refuse our reply:\n{call.describe()}"
    sent = call.json()
    assert sent["msgtype"] == "markdown", sent
    assert REPLY in sent["markdown"]["text"], sent
    assert sent["markdown"]["title"], sent
    runtime.wait_logged_input("dingtalk", words)
    # In a group the answer @-mentions the sender: DingTalk needs the staff id
    # in at.atUserIds and "@<staffId>" in the Markdown text for it to notify.
    assert sent.get("at", {}).get("atUserIds") == [staff], f"no @ of the sender in the group reply: {sent}"
    assert f"@{staff}" in sent["markdown"]["text"], f"the Markdown text does not carry the @: {sent}"
    assert runtime.delivery_state(f"dingtalk:{msg_id}") is not None, "the delivery was not recorded durably"
    assert len(session_calls(runtime, webhook)) == 1
    assert not batch_sends_to(runtime, staff)


def test_expired_session_webhook_falls_back_to_the_openapi(runtime: Runtime) -> None:
    staff, msg_id = uid("staff"), uid("msg")
    expired = int(time.time() * 1000) - 1000
    webhook = runtime.platform.session_webhook(expired)
    body = message(
        msg_id=msg_id, conversation_id=uid("cid"), staff_id=staff, group=False,
        session_webhook=webhook, expires_ms=expired,
    )
    r = runtime.post("/webhooks/dingtalk", body, headers())
    assert r.status == 200, r
    calls = wait_for(lambda: batch_sends_to(runtime, staff), f"a batchSend to {staff}", context=runtime.platform.dump)
    call = calls[0]
    assert not call.problems, f"DingTalk would refuse our OpenAPI call:\n{call.describe()}"
    assert call.headers["x-acs-dingtalk-access-token"] in runtime.platform.dt_tokens
    sent = call.json()
    assert sent["robotCode"] == mp.DT_ROBOT_CODE, sent
    assert sent["msgKey"] == "sampleMarkdown", sent
    param = json.loads(sent["msgParam"])
    assert REPLY in param["text"] and param["title"], param
    assert not session_calls(runtime, webhook), "the expired session webhook was used"
    assert len(batch_sends_to(runtime, staff)) == 1


def test_redelivered_msgid_is_answered_once(runtime: Runtime) -> None:
    staff, msg_id, cid = uid("staff"), uid("msg"), uid("cid")
    exp = int(time.time() * 1000) + 90 * 60 * 1000
    webhook = runtime.platform.session_webhook(exp)
    body = message(msg_id=msg_id, conversation_id=cid, staff_id=staff, group=True, session_webhook=webhook, expires_ms=exp)
    assert runtime.post("/webhooks/dingtalk", body, headers()).status == 200
    wait_for(lambda: session_calls(runtime, webhook), "a reply on the session webhook", context=runtime.platform.dump)
    dup_before = runtime.metric("clawdbot_webhook_requests_total", channel="dingtalk", outcome="duplicate")
    assert runtime.post("/webhooks/dingtalk", body, headers()).status == 200
    dup_after = runtime.metric("clawdbot_webhook_requests_total", channel="dingtalk", outcome="duplicate")
    assert dup_after == dup_before + 1, f"redelivery not counted as a duplicate ({dup_before} -> {dup_after})"
    later = message(msg_id=uid("msg"), conversation_id=cid, staff_id=staff, group=True, session_webhook=webhook, expires_ms=exp)
    assert runtime.post("/webhooks/dingtalk", later, headers()).status == 200
    wait_for(lambda: len(session_calls(runtime, webhook)) >= 2, "the later message's reply", context=runtime.platform.dump)
    calls = session_calls(runtime, webhook)
    assert len(calls) == 2, "the redelivery was answered again:\n" + "\n".join(c.describe() for c in calls)


def _refused(rt: Runtime, h: dict[str, str]) -> None:
    msg_id = uid("msg")
    exp = int(time.time() * 1000) + 90 * 60 * 1000
    body = message(
        msg_id=msg_id, conversation_id=uid("cid"), staff_id=uid("staff"), group=True,
        session_webhook=rt.platform.session_webhook(exp), expires_ms=exp,
    )
    r = rt.post("/webhooks/dingtalk", body, h)
    assert r.status == 401, r
    assert rt.delivery_state(f"dingtalk:{msg_id}") is None


def test_timestamp_older_than_an_hour_is_401(runtime: Runtime) -> None:
    _refused(runtime, headers(ts_ms=int(time.time() * 1000) - 3600 * 1000 - 120 * 1000))


def test_missing_sign_is_401(runtime: Runtime) -> None:
    _refused(runtime, headers(sign=False))


def test_sign_with_another_secret_is_401(runtime: Runtime) -> None:
    _refused(runtime, headers(secret="not-the-app-secret"))



def _direct_message(rt: Runtime, expires_ms: int) -> tuple[str, str]:
    """Posts a one-to-one message whose session webhook expires at
    `expires_ms`; returns the sender's staff id and that webhook."""
    staff = uid("staff")
    webhook = rt.platform.session_webhook(expires_ms)
    body = message(
        msg_id=uid("msg"), conversation_id=uid("cid"), staff_id=staff, group=False,
        session_webhook=webhook, expires_ms=expires_ms,
    )
    r = rt.post("/webhooks/dingtalk", body, headers())
    assert r.status == 200, r
    return staff, webhook


def test_action_card_format_answers_with_a_one_button_card(cards_runtime: Runtime) -> None:
    rt = cards_runtime
    now = int(time.time() * 1000)
    # While the session webhook is valid: an actionCard message on it.
    _, webhook = _direct_message(rt, now + 90 * 60 * 1000)
    call = wait_for(lambda: session_calls(rt, webhook), "an ActionCard on the session webhook", context=rt.platform.dump)[0]
    assert not call.problems, f"DingTalk would refuse our reply:\n{call.describe()}"
    sent = call.json()
    assert sent["msgtype"] == "actionCard", sent
    card = sent["actionCard"]
    assert REPLY in card["text"] and card["title"], card
    assert (card["singleTitle"], card["singleURL"]) == (CARD_BUTTON, CARD_URL), card

    # Once it has expired: the robot OpenAPI's ActionCard template.
    staff, webhook = _direct_message(rt, now - 1000)
    call = wait_for(lambda: batch_sends_to(rt, staff), f"a batchSend to {staff}", context=rt.platform.dump)[0]
    assert not call.problems, f"DingTalk would refuse our OpenAPI call:\n{call.describe()}"
    sent = call.json()
    assert sent["msgKey"] == "sampleActionCard", sent
    param = json.loads(sent["msgParam"])
    assert REPLY in param["text"] and param["title"], param
    assert (param["singleTitle"], param["singleURL"]) == (CARD_BUTTON, CARD_URL), param
    assert not session_calls(rt, webhook), "the expired session webhook was used"
