"""Feishu / Lark long-connection mode: the runtime asks the mock endpoint
(POST /callback/ws/endpoint, as lark_oapi.ws.client does) for a WebSocket
URL, then speaks lark-oapi's protobuf frames (the SDK's own generated
pbbp2_pb2.Frame builds and parses every frame here) with the server in
mockplatform.FeishuWsServer."""

from __future__ import annotations

import json

import mockplatform as mp
from harness import REPLY, Runtime, uid, wait_for
from test_feishu import message_event, new_ids


def _ws(rt: Runtime) -> mp.FeishuWsServer:
    return rt.extra["ws"]


def _connected(rt: Runtime) -> mp.FeishuWsServer:
    ws = _ws(rt)
    wait_for(ws.connected, "the runtime's long connection", context=ws.describe)
    return ws


def _replies_to(rt: Runtime, message_id: str) -> list[mp.Call]:
    return rt.platform.find("feishu.reply", lambda c: c.path == f"/open-apis/im/v1/messages/{message_id}/reply")


def _push(rt: Runtime, event: dict, seq: int) -> tuple[str, object]:
    """Sends one event as a data frame; returns (frame message id, answer)."""
    ws = _connected(rt)
    frame_id = uid("ws-msg-")
    payload = json.dumps(event).encode()
    ws.send_frame(ws.data_frame(frame_id, payload, uid("trace-"), seq))
    answers = wait_for(lambda: ws.answers_for(frame_id), f"the answer frame to {frame_id}", context=ws.describe)
    return frame_id, answers[0]


def _check_answer(answer, frame_id: str, seq: int) -> None:
    hs = {h.key: h.value for h in answer.headers}
    assert answer.method == 1, hs
    assert answer.service == mp.FS_WS_SERVICE_ID
    assert answer.SeqID == seq and answer.LogID == seq + 1000, "answer does not echo the frame's ids"
    assert hs.get("message_id") == frame_id and hs.get("type") == "event", hs
    assert hs.get("biz_rt", "").isdigit(), f"no biz_rt header: {hs}"
    body = json.loads(bytes(answer.payload))
    assert body.get("code") == 200, body


def test_endpoint_call_and_pings(ws_runtime: Runtime) -> None:
    ws = _connected(ws_runtime)
    endpoint = ws_runtime.platform.find("feishu.ws_endpoint")
    assert endpoint and not endpoint[0].problems, ws_runtime.platform.dump()
    assert endpoint[0].json() == {"AppID": mp.FS_APP_ID, "AppSecret": mp.FS_APP_SECRET}
    # The runtime pings at once on connect, as the SDKs do; the server pongs.
    pings = wait_for(ws.pings, "a ping frame", context=ws.describe)
    assert pings[0].service == mp.FS_WS_SERVICE_ID, ws.describe()
    assert not ws.undecodable, ws.describe()


def test_event_is_acked_and_answered_once(ws_runtime: Runtime) -> None:
    ids = new_ids()
    words = f"over the long connection {uid()}"
    # Long-connection events carry no verification token.
    event = message_event(**ids, token="", text=f"@_user_1 {words}")
    frame_id, answer = _push(ws_runtime, event, seq=11)
    _check_answer(answer, frame_id, 11)
    calls = wait_for(
        lambda: _replies_to(ws_runtime, ids["message_id"]),
        f"a reply to {ids['message_id']}",
        context=ws_runtime.platform.dump,
    )
    call = calls[0]
    assert not call.problems, f"Feishu would refuse our reply:\n{call.describe()}"
    assert json.loads(call.json()["content"]) == {"text": REPLY}
    assert ws_runtime.delivery_state(f"feishu:{ids['event_id']}") is not None
    ws_runtime.wait_logged_input("feishu", words)

    # Redelivered after a reconnect: acked again, not answered again.
    frame_id2, answer2 = _push(ws_runtime, event, seq=12)
    _check_answer(answer2, frame_id2, 12)
    later = new_ids()
    later["chat_id"] = ids["chat_id"]
    _push(ws_runtime, message_event(**later, token=""), seq=13)
    wait_for(lambda: _replies_to(ws_runtime, later["message_id"]), "the later event's reply", context=ws_runtime.platform.dump)
    calls = _replies_to(ws_runtime, ids["message_id"])
    assert len(calls) == 1, "the redelivered event was answered again:\n" + "\n".join(c.describe() for c in calls)
    assert not _ws(ws_runtime).undecodable, _ws(ws_runtime).describe()
    assert len(ws_runtime.platform.find("feishu.ws_endpoint")) == 1, "the connection was re-established meanwhile"
