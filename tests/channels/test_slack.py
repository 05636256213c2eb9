"""Slack Events API: requests signed with slack_sdk's own SignatureVerifier
(and checked by it before sending); replies land on the mock chat.postMessage."""

from __future__ import annotations

import json
import time

from slack_sdk.signature import SignatureVerifier

import mockplatform as mp
from harness import REPLY, Runtime, uid, wait_for

VERIFIER = SignatureVerifier(mp.SLACK_SIGNING_SECRET)


def signed(body: bytes, ts: int | None = None, retry: int | None = None) -> dict[str, str]:
    ts_s = str(int(time.time()) if ts is None else ts)
    sig = VERIFIER.generate_signature(timestamp=ts_s, body=body)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts_s,
        "X-Slack-Signature": sig,
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    if ts is None:
        # The SDK (clock included) accepts what we send.
        assert VERIFIER.is_valid_request(body, headers), "slack_sdk refuses our own signature"
    return headers


def mention(event_id: str, channel: str, thread_ts: str, ts: str, words: str = "is it everything a river should be?") -> bytes:
    now = int(time.time())
    return json.dumps(
        {
            "token": "ZZZZZZWSxiZZZ2yIvs3peJ",
            "team_id": "T0001",
            "api_app_id": "A0KRD7HC3",
            "event": {
                "type": "app_mention",
                "user": "U061F7AUR",
                "text": f"<@U0LAN0Z89> {words}",
                "ts": ts,
                "thread_ts": thread_ts,
                "channel": channel,
                "event_ts": ts,
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": now,
            "authorizations": [
                {"enterprise_id": None, "team_id": "T0001", "user_id": "U0LAN0Z89", "is_bot": True, "is_enterprise_install": False}
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0",
        }
    ).encode()


def posts_in(rt: Runtime, channel: str) -> list[mp.Call]:
    def mine(c: mp.Call) -> bool:
        try:
            return c.json().get("channel") == channel
        except ValueError:
            return False

    return rt.platform.find("slack.post_message", mine)


def new_mention(words: str = "is it everything a river should be?") -> tuple[str, str, str, bytes]:
    event_id = uid("Ev")
    channel = uid("C").upper()
    ts = f"{time.time():.6f}"
    thread_ts = f"{time.time() - 60:.6f}"
    return event_id, channel, thread_ts, mention(event_id, channel, thread_ts, ts, words)


def test_url_verification_echoes_the_challenge(runtime: Runtime) -> None:
    challenge = uid("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"}).encode()
    r = runtime.post("/webhooks/slack", body, signed(body))
    assert r.status == 200, r
    # Slack takes the bare challenge (text/plain) or {"challenge": ...} as JSON.
    if r.headers.get("content-type", "").startswith("application/json"):
        assert r.json() == {"challenge": challenge}, r
    else:
        assert r.body.decode() == challenge, r


def test_app_mention_gets_one_threaded_reply_with_the_bot_token(runtime: Runtime) -> None:
    words = f"is it everything a river should be? {uid()}"
    event_id, channel, thread_ts, body = new_mention(words)
    r = runtime.post("/webhooks/slack", body, signed(body))
    assert r.status == 200, r
    calls = wait_for(lambda: posts_in(runtime, channel), f"chat.postMessage to {channel}", context=runtime.platform.dump)
    call = calls[0]
    assert not call.problems, f"Slack would refuse our reply:\n{call.describe()}"
    assert call.headers["authorization"] == f"Bearer {mp.SLACK_BOT_TOKEN}"
    sent = call.json()
    assert sent["channel"] == channel
    assert sent["text"] == REPLY
    assert sent.get("thread_ts") == thread_ts, f"reply not in the thread: {sent}"
    assert runtime.delivery_state(f"slack:{event_id}") is not None, "the delivery was not recorded durably"
    assert len(posts_in(runtime, channel)) == 1
    runtime.wait_logged_input("slack", words)


def test_retry_with_the_same_event_id_is_not_answered_again(runtime: Runtime) -> None:
    event_id, channel, thread_ts, body = new_mention()
    assert runtime.post("/webhooks/slack", body, signed(body)).status == 200
    wait_for(lambda: posts_in(runtime, channel), f"chat.postMessage to {channel}", context=runtime.platform.dump)
    dup_before = runtime.metric("clawdbot_webhook_requests_total", channel="slack", outcome="duplicate")
    r = runtime.post("/webhooks/slack", body, signed(body, retry=1))
    assert r.status == 200, r
    dup_after = runtime.metric("clawdbot_webhook_requests_total", channel="slack", outcome="duplicate")
    assert dup_after == dup_before + 1, f"retry not counted as a duplicate ({dup_before} -> {dup_after})"
    # A later mention in the same channel is answered; a second answer to the
    # first would have gone out by then.
    later = mention(uid("Ev"), channel, thread_ts, f"{time.time():.6f}")
    assert runtime.post("/webhooks/slack", later, signed(later)).status == 200
    wait_for(lambda: len(posts_in(runtime, channel)) >= 2, "the later mention's reply", context=runtime.platform.dump)
    calls = posts_in(runtime, channel)
    assert len(calls) == 2, "the retried event was answered again:\n" + "\n".join(c.describe() for c in calls)


def test_bad_signature_is_401(runtime: Runtime) -> None:
    event_id, _, _, body = new_mention()
    headers = signed(body)
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert not VERIFIER.is_valid_request(body, headers)
    r = runtime.post("/webhooks/slack", body, headers)
    assert r.status == 401, r
    assert runtime.delivery_state(f"slack:{event_id}") is None


def test_six_minute_old_timestamp_is_401(runtime: Runtime) -> None:
    event_id, _, _, body = new_mention()
    headers = signed(body, ts=int(time.time()) - 360)
    # The signature itself is right; only the clock check fails (in the SDK too).
    assert not VERIFIER.is_valid_request(body, headers)
    r = runtime.post("/webhooks/slack", body, headers)
    assert r.status == 401, r
    assert runtime.delivery_state(f"slack:{event_id}") is None
