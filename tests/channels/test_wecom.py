"""WeCom (企业微信) callbacks, encrypted and signed by wechatpy's own
WXBizMsgCrypt implementation with Tencent's sample Token / EncodingAESKey /
CorpID; replies land on the mock message-send API."""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import WeChatSigner

import mockplatform as mp
from harness import REPLY, Runtime, uid, wait_for

CRYPTO = WeChatCrypto(mp.WC_TOKEN, mp.WC_AES_KEY, mp.WC_CORP_ID)


def signature(ts: str, nonce: str, encrypt: str) -> str:
    s = WeChatSigner()
    s.add_data(mp.WC_TOKEN, ts, nonce, encrypt)
    return s.signature


def text_xml(from_user: str, msg_id: str, content: str = "hello bot") -> str:
    return (
        "<xml>"
        f"<ToUserName><![CDATA[{mp.WC_CORP_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id}</MsgId>"
        f"<AgentID>{mp.WC_AGENT_ID}</AgentID>"
        "</xml>"
    )


def encrypted_post(plain_xml: str, crypto: WeChatCrypto = CRYPTO, ts: int | None = None) -> tuple[str, bytes]:
    """(query string, body) of a callback as WeCom sends it."""
    ts, nonce = str(int(time.time()) if ts is None else ts), secrets.token_hex(5)
    # wechatpy builds the Encrypt value and its msg_signature.
    packed = ET.fromstring(crypto.encrypt_message(plain_xml, nonce, ts))
    encrypt, sig = packed.findtext("Encrypt"), packed.findtext("MsgSignature")
    body = (
        "<xml>"
        f"<ToUserName><![CDATA[{mp.WC_CORP_ID}]]></ToUserName>"
        f"<AgentID><![CDATA[{mp.WC_AGENT_ID}]]></AgentID>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
        "</xml>"
    ).encode()
    query = urlencode({"msg_signature": sig, "timestamp": ts, "nonce": nonce})
    return query, body


def post(rt: Runtime, query: str, body: bytes):
    return rt.post(f"/webhooks/wecom?{query}", body, {"Content-Type": "text/xml"})


def sends_to(rt: Runtime, user: str) -> list[mp.Call]:
    def mine(c: mp.Call) -> bool:
        try:
            return c.json().get("touser") == user
        except ValueError:
            return False

    return rt.platform.find("wecom.send", mine)


def new_message() -> tuple[str, str]:
    return uid("user-"), str(secrets.randbelow(9 * 10**18) + 10**18)


def test_url_verification_answers_the_plaintext(runtime: Runtime) -> None:
    plain = str(secrets.randbelow(10**19))
    ts, nonce = str(int(time.time())), secrets.token_hex(5)
    echostr = PrpCrypto(CRYPTO.key).encrypt(plain, mp.WC_CORP_ID).decode()
    sig = signature(ts, nonce, echostr)
    assert CRYPTO.check_signature(sig, ts, nonce, echostr) == plain  # the SDK agrees
    q = urlencode({"msg_signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr})
    r = runtime.get(f"/webhooks/wecom?{q}")
    assert r.status == 200, r
    # The bare plaintext: no quotes, no newline, no BOM.
    assert r.body == plain.encode(), r


def test_url_verification_with_a_bad_signature_is_401(runtime: Runtime) -> None:
    ts, nonce = str(int(time.time())), secrets.token_hex(5)
    echostr = PrpCrypto(CRYPTO.key).encrypt("12345", mp.WC_CORP_ID).decode()
    sig = signature(ts, nonce, echostr)[::-1]
    q = urlencode({"msg_signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr})
    r = runtime.get(f"/webhooks/wecom?{q}")
    assert r.status == 401, r


def test_text_message_gets_one_reply_to_the_sender(runtime: Runtime) -> None:
    user, msg_id = new_message()
    words = f"hello bot {uid()}"
    plain = text_xml(user, msg_id, words)
    query, body = encrypted_post(plain)
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert CRYPTO.decrypt_message(body, params["msg_signature"], params["timestamp"], params["nonce"]) == plain
    r = post(runtime, query, body)
    assert r.status == 200, r
    calls = wait_for(lambda: sends_to(runtime, user), f"a message/send to {user}", context=runtime.platform.dump)
    call = calls[0]
    assert not call.problems, f"WeCom would refuse our reply:\n{call.describe()}"
    sent = call.json()
    assert sent["msgtype"] == "text", sent
    assert sent["text"]["content"] == REPLY, sent
    assert call.q("access_token") in runtime.platform.wc_tokens
    assert runtime.delivery_state(f"wecom:{msg_id}") is not None, "the delivery was not recorded durably"
    assert len(sends_to(runtime, user)) == 1
    runtime.wait_logged_input("wecom", words)


def test_duplicate_msgid_is_answered_once(runtime: Runtime) -> None:
    user, msg_id = new_message()
    plain = text_xml(user, msg_id)
    assert post(runtime, *encrypted_post(plain)).status == 200
    wait_for(lambda: sends_to(runtime, user), f"a message/send to {user}", context=runtime.platform.dump)
    dup_before = runtime.metric("clawdbot_webhook_requests_total", channel="wecom", outcome="duplicate")
    # WeCom's retry: the same message, freshly encrypted and signed.
    r = post(runtime, *encrypted_post(plain))
    assert r.status == 200, r
    dup_after = runtime.metric("clawdbot_webhook_requests_total", channel="wecom", outcome="duplicate")
    assert dup_after == dup_before + 1, f"retry not counted as a duplicate ({dup_before} -> {dup_after})"
    _, later_id = new_message()
    assert post(runtime, *encrypted_post(text_xml(user, later_id, "and another thing"))).status == 200
    wait_for(lambda: len(sends_to(runtime, user)) >= 2, "the later message's reply", context=runtime.platform.dump)
    calls = sends_to(runtime, user)
    assert len(calls) == 2, "the duplicate was answered again:\n" + "\n".join(c.describe() for c in calls)


def test_message_for_another_corp_is_401(runtime: Runtime) -> None:
    user, msg_id = new_message()
    plain = text_xml(user, msg_id)
    other = WeChatCrypto(mp.WC_TOKEN, mp.WC_AES_KEY, "wwffffffffffffffff")
    query, body = encrypted_post(plain, other)
    params = dict(p.split("=", 1) for p in query.split("&"))
    with pytest.raises(InvalidCorpIdException):
        CRYPTO.decrypt_message(body, params["msg_signature"], params["timestamp"], params["nonce"])
    r = post(runtime, query, body)
    assert r.status == 401, r
    assert runtime.delivery_state(f"wecom:{msg_id}") is None


def test_tampered_signature_is_401(runtime: Runtime) -> None:
    user, msg_id = new_message()
    query, body = encrypted_post(text_xml(user, msg_id))
    params = dict(p.split("=", 1) for p in query.split("&"))
    sig = params["msg_signature"]
    params["msg_signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    with pytest.raises(InvalidSignatureException):
        CRYPTO.decrypt_message(body, params["msg_signature"], params["timestamp"], params["nonce"])
    r = post(runtime, urlencode(params), body)
    assert r.status == 401, r
    assert runtime.delivery_state(f"wecom:{msg_id}") is None


def test_timestamp_older_than_an_hour_is_401(runtime: Runtime) -> None:
    user, msg_id = new_message()
    plain = text_xml(user, msg_id)
    query, body = encrypted_post(plain, ts=int(time.time()) - 3600 - 120)
    params = dict(p.split("=", 1) for p in query.split("&"))
    # Authentic otherwise: the SDK (no clock check) decrypts it.
    assert CRYPTO.decrypt_message(body, params["msg_signature"], params["timestamp"], params["nonce"]) == plain
    r = post(runtime, query, body)
    assert r.status == 401, r
    assert runtime.delivery_state(f"wecom:{msg_id}") is None
