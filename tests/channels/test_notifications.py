"""POST /api/v1/notifications: robot notifications (DingTalk custom robot,
Feishu custom bot, WeCom group robot), each checked by the mock robot as the
platform checks it (signatures recomputed independently here)."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

import mockplatform as mp
from harness import ADMIN_KEY, USER_KEY, Runtime, uid, wait_for


def notify(rt: Runtime, payload: dict, key: str = ADMIN_KEY):
    return rt.post(
        "/api/v1/notifications",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )


def robot_call(rt: Runtime, route: str, text: str, extract: Callable[[Any], str | None], what: str) -> mp.Call:
    """Waits for the call on `route` whose message (`extract` reads it from
    the JSON body) contains `text`; fails naming `what`."""

    def has_text(c: mp.Call) -> bool:
        try:
            return text in (extract(c.json()) or "")
        except (ValueError, AttributeError, TypeError):
            return False

    return wait_for(lambda: rt.platform.find(route, has_text), what, context=rt.platform.dump)[0]


def test_dingtalk_custom_robot_gets_a_signed_message(runtime: Runtime) -> None:
    title, text = uid("title-"), uid("text-")
    r = notify(runtime, {"channel": "dingtalk", "title": title, "text": text})
    assert r.status == 202, r
    extract = lambda b: (b.get("markdown") or {}).get("text") or (b.get("text") or {}).get("content")
    call = robot_call(runtime, "dingtalk.robot", text, extract, "the DingTalk custom robot notification")
    # The mock checked access_token, timestamp freshness and the sign.
    assert not call.problems, f"DingTalk would refuse the notification:\n{call.describe()}"
    assert call.response == {"errcode": 0, "errmsg": "ok"}
    assert call.q("sign") == mp.dingtalk_sign(mp.DT_ROBOT_SECRET, call.q("timestamp"))
    sent = call.json()
    if sent["msgtype"] == "markdown":
        assert sent["markdown"]["title"] == title, sent


def test_feishu_custom_bot_gets_a_signed_message(runtime: Runtime) -> None:
    title, text = uid("title-"), uid("text-")
    r = notify(runtime, {"channel": "feishu", "title": title, "text": text})
    assert r.status == 202, r
    call = robot_call(
        runtime, "feishu.bot", text, lambda b: b["content"]["text"], "the Feishu custom bot notification"
    )
    assert not call.problems, f"Feishu would refuse the notification (code 19021 is a bad sign):\n{call.describe()}"
    sent = call.json()
    # key = timestamp + "\n" + secret, message empty; timestamp in seconds.
    assert sent["sign"] == mp.feishu_bot_sign(mp.FS_HOOK_SECRET, str(sent["timestamp"])), sent
    assert title in sent["content"]["text"], sent


def test_wecom_group_robot_gets_the_message(runtime: Runtime) -> None:
    title, text = uid("title-"), uid("text-")
    r = notify(runtime, {"channel": "wecom", "title": title, "text": text})
    assert r.status == 202, r
    extract = lambda b: (b.get("markdown") or b.get("text") or {}).get("content")
    call = robot_call(runtime, "wecom.robot", text, extract, "the WeCom group robot notification")
    assert not call.problems, f"WeCom would refuse the notification:\n{call.describe()}"
    assert title in extract(call.json())


def test_a_user_key_is_403(runtime: Runtime) -> None:
    text = uid("text-")
    r = notify(runtime, {"channel": "dingtalk", "title": "t", "text": text}, key=USER_KEY)
    assert r.status == 403, r


@pytest.mark.parametrize("channel", ["teams", "slack"])
def test_an_unknown_channel_is_400(runtime: Runtime, channel: str) -> None:
    r = notify(runtime, {"channel": channel, "title": "t", "text": "x"})
    assert r.status == 400, r
