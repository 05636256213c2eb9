"""Feishu / Lark event subscription over HTTP, with an Encrypt Key and a
verification token.

lark-oapi only decrypts, so events are encrypted here with `cryptography`
(AES-256-CBC, key SHA-256(encrypt key), random IV, PKCS#7) and signed with
the documented formula; before anything is sent, lark-oapi's own
EventDispatcherHandler must accept the exact body and headers (it decrypts,
checks the verification token and the X-Lark-Signature, and parses the
event), so the SDK vouches for every request the runtime gets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from lark_oapi.core.log import logger as lark_logger
from lark_oapi.core.model import RawRequest
from lark_oapi.core.utils import AESCipher
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler

import mockplatform as mp
from harness import BODY_LIMIT, FEISHU_WINDOW_S, REPLY, Runtime, uid, wait_for

# The SDK logs every refusal with a traceback; the tests assert on results.
lark_logger.setLevel(logging.CRITICAL)


def encrypt(plaintext: bytes, key: str = mp.FS_ENCRYPT_KEY) -> str:
    aes_key = hashlib.sha256(key.encode()).digest()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    out = base64.b64encode(iv + enc.update(data) + enc.finalize()).decode()
    # The SDK must read back exactly what we meant.
    assert AESCipher(key).decrypt_str(out) == plaintext.decode(), "lark-oapi decrypts to something else"
    return out


def sign_headers(body: bytes, ts: int | None = None, key: str = mp.FS_ENCRYPT_KEY) -> dict[str, str]:
    ts_s = str(int(time.time()) if ts is None else ts)
    nonce = secrets.token_hex(8)
    sig = hashlib.sha256((ts_s + nonce + key).encode() + body).hexdigest()
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Lark-Request-Timestamp": ts_s,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": sig,
        "X-Request-Id": uid("req-"),
    }


def sdk_check(body: bytes, headers: dict[str, str]) -> tuple[int, list[Any], bytes]:
    """Runs the request through lark-oapi's dispatcher: (status, events, answer)."""
    got: list[Any] = []
    handler = (
        EventDispatcherHandler.builder(mp.FS_ENCRYPT_KEY, mp.FS_VERIFICATION_TOKEN)
        .register_p2_im_message_receive_v1(got.append)
        .build()
    )
    req = RawRequest()
    req.uri = "/webhooks/feishu"
    req.headers = dict(headers)
    req.body = body
    resp = handler.do(req)
    return resp.status_code, got, resp.content


def message_event(
    *,
    event_id: str,
    message_id: str,
    chat_id: str,
    text: str = "@_user_1 hello there",
    token: str = mp.FS_VERIFICATION_TOKEN,
) -> dict:
    now_ms = str(int(time.time() * 1000))
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "im.message.receive_v1",
            "create_time": now_ms,
            "token": token,
            "app_id": mp.FS_APP_ID,
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": {
            "sender": {
                "sender_id": {"union_id": "on_8ed6aa67826108097d9ee143816345", "user_id": "e33ggbyz", "open_id": "ou_84aad35d084aa403a838cf73ee18467"},
                "sender_type": "user",
                "tenant_key": "2ca1d211f64f6438",
            },
            "message": {
                "message_id": message_id,
                "root_id": "",
                "parent_id": "",
                "create_time": now_ms,
                "update_time": now_ms,
                "chat_id": chat_id,
                "chat_type": "group",
                "message_type": "text",
                "content": json.dumps({"text": text}),
                "mentions": [
                    {
                        "key": "@_user_1",
                        "id": {"union_id": "on_bot", "user_id": "", "open_id": "ou_bot0000000000000000000000000"},
                        "name": "ClawdBot",
                        "tenant_key": "2ca1d211f64f6438",
                    }
                ],
                "user_agent": "Mozilla/5.0 Lark/7.1",
            },
        },
    }


def signed_event(event: dict, ts: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"encrypt": encrypt(json.dumps(event).encode())}).encode()
    return body, sign_headers(body, ts)


def new_ids() -> dict[str, str]:
    return {"event_id": uid("evt-"), "message_id": uid("om_"), "chat_id": uid("oc_")}


def replies_to(rt: Runtime, message_id: str) -> list[mp.Call]:
    return rt.platform.find("feishu.reply", lambda c: c.path == f"/open-apis/im/v1/messages/{message_id}/reply")


def deliver(rt: Runtime, event: dict) -> None:
    body, headers = signed_event(event)
    status, events, answer = sdk_check(body, headers)
    assert status == 200 and len(events) == 1, f"lark-oapi refuses our event: {status} {answer!r}"
    assert events[0].event.message.message_id == event["event"]["message"]["message_id"]
    r = rt.post("/webhooks/feishu", body, headers)
    assert r.status == 200, r


def wait_reply(rt: Runtime, message_id: str) -> mp.Call:
    calls = wait_for(
        lambda: replies_to(rt, message_id),
        f"a reply to Feishu message {message_id}",
        context=lambda: rt.platform.dump(),
    )
    return calls[0]


def assert_good_reply(rt: Runtime, call: mp.Call) -> None:
    assert not call.problems, f"Feishu would refuse our reply:\n{call.describe()}"
    assert call.status == 200
    body = call.json()
    assert body["msg_type"] == "text", body
    assert json.loads(body["content"]) == {"text": REPLY}, body
    # The bearer token is one the token endpoint issued for our app's credentials.
    token_calls = rt.platform.find("feishu.token", lambda c: not c.problems)
    assert token_calls, f"no successful tenant_access_token call:\n{rt.platform.dump()}"


def test_url_verification_encrypted_without_signature(runtime: Runtime) -> None:
    challenge = uid("challenge-")
    event = {"challenge": challenge, "token": mp.FS_VERIFICATION_TOKEN, "type": "url_verification"}
    body = json.dumps({"encrypt": encrypt(json.dumps(event).encode())}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, _, answer = sdk_check(body, headers)
    assert status == 200 and json.loads(answer) == {"challenge": challenge}, answer
    r = runtime.post("/webhooks/feishu", body, headers)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.json() == {"challenge": challenge}


def test_mention_gets_exactly_one_reply_with_tenant_token(runtime: Runtime) -> None:
    ids = new_ids()
    words = f"hello there {uid()}"
    deliver(runtime, message_event(**ids, text=f"@_user_1 {words}"))
    call = wait_reply(runtime, ids["message_id"])
    assert_good_reply(runtime, call)
    runtime.wait_logged_input("feishu", words)
    state = runtime.delivery_state(f"feishu:{ids['event_id']}")
    assert state is not None, "the delivery was not recorded durably"
    assert len(replies_to(runtime, ids["message_id"])) == 1


def _answered_once_despite(rt: Runtime, first: dict, again: dict) -> None:
    deliver(rt, first)
    wait_reply(rt, first["event"]["message"]["message_id"])
    dup_before = rt.metric("clawdbot_webhook_requests_total", channel="feishu", outcome="duplicate")
    deliver(rt, again)
    dup_after = rt.metric("clawdbot_webhook_requests_total", channel="feishu", outcome="duplicate")
    assert dup_after == dup_before + 1, f"redelivery not counted as a duplicate ({dup_before} -> {dup_after})"
    # A later message in the same chat is answered; by then a second answer
    # to the first one would have been sent too.
    later = new_ids()
    later["chat_id"] = first["event"]["message"]["chat_id"]
    deliver(rt, message_event(**later))
    wait_reply(rt, later["message_id"])
    calls = replies_to(rt, first["event"]["message"]["message_id"])
    assert len(calls) == 1, "the redelivered event was answered again:\n" + "\n".join(c.describe() for c in calls)


def test_redelivered_event_is_answered_once(runtime: Runtime) -> None:
    ids = new_ids()
    event = message_event(**ids)
    # Feishu's retry carries the same event (a fresh nonce and signature).
    _answered_once_despite(runtime, event, event)


def test_same_message_under_a_new_event_id_is_answered_once(runtime: Runtime) -> None:
    ids = new_ids()
    first = message_event(**ids)
    again = message_event(**{**ids, "event_id": uid("evt-")})
    _answered_once_despite(runtime, first, again)


def _sdk_refuses(body: bytes, headers: dict[str, str], what: str) -> None:
    status, _, _ = sdk_check(body, headers)
    assert status != 200, f"lark-oapi accepts {what}"


def _refused(
    rt: Runtime, body: bytes, headers: dict[str, str], status: int, code: str, event_id: str | None = None
) -> None:
    """The webhook answers `status` with error `code`; with `event_id`, the
    event also left no durable delivery record."""
    r = rt.post("/webhooks/feishu", body, headers)
    assert r.status == status, r
    assert r.json()["error"]["code"] == code, r
    if event_id is not None:
        assert rt.delivery_state(f"feishu:{event_id}") is None


def test_wrong_signature_is_401(runtime: Runtime) -> None:
    ids = new_ids()
    body, headers = signed_event(message_event(**ids))
    headers["X-Lark-Signature"] = hashlib.sha256(b"not the body").hexdigest()
    _sdk_refuses(body, headers, "the forged signature")
    _refused(runtime, body, headers, 401, "bad_signature", event_id=ids["event_id"])


def test_wrong_verification_token_is_401(runtime: Runtime) -> None:
    ids = new_ids()
    body, headers = signed_event(message_event(**ids, token="someone-elses-token"))
    _sdk_refuses(body, headers, "the wrong verification token")
    _refused(runtime, body, headers, 401, "bad_token", event_id=ids["event_id"])


def test_timestamp_outside_the_window_is_401(runtime: Runtime) -> None:
    ids = new_ids()
    stale = int(time.time()) - FEISHU_WINDOW_S - 120
    body, headers = signed_event(message_event(**ids), ts=stale)
    # Authentic in every other respect: the SDK (which has no clock check) accepts it.
    status, _, answer = sdk_check(body, headers)
    assert status == 200, answer
    _refused(runtime, body, headers, 401, "stale", event_id=ids["event_id"])


def test_garbage_body_is_400(runtime: Runtime) -> None:
    body = b"\x00this is {not json"
    _refused(runtime, body, sign_headers(body), 400, "malformed")


def test_body_over_the_limit_is_413(runtime: Runtime) -> None:
    event = message_event(**new_ids(), text="@_user_1 " + "x" * BODY_LIMIT)
    body, headers = signed_event(event)
    assert len(body) > BODY_LIMIT
    r = runtime.post("/webhooks/feishu", body, headers)
    assert r.status == 413, r


def test_card_format_answers_with_an_interactive_card(cards_runtime: Runtime) -> None:
    ids = new_ids()
    deliver(cards_runtime, message_event(**ids, text=f"@_user_1 a card please {uid()}"))
    call = wait_reply(cards_runtime, ids["message_id"])
    assert not call.problems, f"Feishu would refuse our reply:\n{call.describe()}"
    body = call.json()
    assert body["msg_type"] == "interactive", body
    card = json.loads(body["content"])
    markdown = [e["content"] for e in card["body"]["elements"] if e["tag"] == "markdown"]
    assert markdown == [REPLY], card
    assert len(replies_to(cards_runtime, ids["message_id"])) == 1
