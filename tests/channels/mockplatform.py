"""Mock IM platforms: the HTTP APIs bot-runtime calls (tokens, replies,
notification robots) for DingTalk, Feishu/Lark, WeCom and Slack, plus the
server side of Feishu's long connection.

Every call is recorded. Each route checks the request the way the platform
does (credentials, tokens, signatures, timestamps, body shape) and answers
with the platform's own error shape when something is wrong; the problems it
found are kept on the recorded call, so a test can assert that the platform
accepted what we sent, and a failure shows exactly what was wrong.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

# ---------------------------------------------------------------------------
# Credentials the mock platforms hold (the runtime's config names the same).
# ---------------------------------------------------------------------------

DT_APP_KEY = "dingappkey0test"
DT_APP_SECRET = "dt-app-secret-3f9a1c"
DT_ROBOT_CODE = "dingrobotcode0test"
DT_ROBOT_TOKEN = "dt-robot-access-token"
DT_ROBOT_SECRET = "SECd41d8cd98f00b204e9800998ecf8427e"

FS_APP_ID = "cli_a1b2c3d4e5f60708"
FS_APP_SECRET = "fs-app-secret-7c2e"
FS_VERIFICATION_TOKEN = "fs-verification-token-91"
FS_ENCRYPT_KEY = "fs-encrypt-key-5d8b"
FS_HOOK_ID = "2f0b7e0c-5c4a-4d1e-9f3b-7d6c5b4a3e21"
FS_HOOK_SECRET = "fs-hook-secret-a4c1"

# Tencent's WXBizMsgCrypt sample credentials (docs/im-protocols vectors).
WC_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
WC_AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
WC_CORP_ID = "ww1436e0e65a779aee"
WC_AGENT_ID = 1000002
WC_SECRET = "wc-app-secret-0b6e"
WC_ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"

SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"

FS_WS_SERVICE_ID = 33
FS_WS_DEVICE_ID = "7337411402957258771"

# DingTalk custom robots and Feishu custom bots refuse timestamps further
# than an hour from their clock.
ROBOT_WINDOW_S = 3600


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret))."""
    msg = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()


def feishu_bot_sign(secret: str, timestamp_s: str) -> str:
    """base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg=empty))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


# ---------------------------------------------------------------------------
# Recorded calls
# ---------------------------------------------------------------------------


@dataclass
class Call:
    seq: int
    route: str
    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0
    response: Any = None
    problems: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def q(self, name: str) -> str | None:
        v = self.query.get(name)
        return v[0] if v else None

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        body = self.body.decode(errors="replace")
        if len(body) > 1500:
            body = body[:1500] + "...(truncated)"
        hdrs = {
            k: v
            for k, v in self.headers.items()
            if k in ("authorization", "content-type", "x-acs-dingtalk-access-token", "user-agent")
        }
        probs = f"\n    PROBLEMS: {self.problems}" if self.problems else ""
        return (
            f"#{self.seq} {self.route}: {self.method} {self.path}"
            f"{'?' + self.raw_query if self.raw_query else ''}\n"
            f"    headers: {hdrs}\n    body: {body}\n"
            f"    answered {self.status}: {json.dumps(self.response, ensure_ascii=False)[:400]}"
            f"{probs}"
        )


class Reject(Exception):
    """A platform-side refusal: HTTP status and the platform's error body."""

    def __init__(self, status: int, body: Any, problem: str):
        super().__init__(problem)
        self.status = status
        self.body = body
        self.problem = problem


def _require(cond: bool, problem: str, status: int, body: Any) -> None:
    if not cond:
        raise Reject(status, body, problem)


def _json_body(call: Call, status: int, err: Any) -> Any:
    ctype = call.headers.get("content-type", "")
    _require(
        ctype.split(";")[0].strip().lower() == "application/json",
        f"Content-Type is {ctype!r}, not application/json",
        status,
        err,
    )
    try:
        return json.loads(call.body)
    except ValueError as exc:
        raise Reject(status, err, f"body is not JSON: {exc}") from None


def _check_card(card: dict, err: Any) -> None:
    """A card Feishu renders: JSON 1.0 (`elements` at the top) or JSON 2.0
    (`"schema": "2.0"`, elements under `body`), each element with a `tag`;
    a markdown element needs its `content`."""
    if card.get("schema") == "2.0":
        elements = (card.get("body") or {}).get("elements")
    else:
        elements = card.get("elements")
    _require(isinstance(elements, list) and elements, "card has no elements", 400, err)
    for e in elements:
        _require(isinstance(e, dict) and _nonempty_str(e.get("tag")), f"card element without a tag: {e!r}", 400, err)
        if e["tag"] == "markdown":
            _require(_nonempty_str(e.get("content")), "markdown element without content", 400, err)


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


# ---------------------------------------------------------------------------
# The HTTP mock
# ---------------------------------------------------------------------------


class MockPlatform:
    """One HTTP server playing every platform API. Thread-safe recording."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._seq = itertools.count(1)
        self.calls: list[Call] = []
        # Tokens this "platform" issued; only these are accepted.
        self.dt_tokens: set[str] = set()
        self.fs_tokens: set[str] = set()
        self.wc_tokens: set[str] = set()
        # DingTalk session webhooks: session id -> expiry (ms).
        self.sessions: dict[str, int] = {}
        # Feishu long connection: the URL the endpoint call hands out.
        self.ws_url: str | None = None

        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, ctype, payload = mock._handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve
            do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="mock-platform", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- test-side API -----------------------------------------------------

    def session_webhook(self, expires_ms: int) -> str:
        sid = secrets.token_hex(8)
        with self._lock:
            self.sessions[sid] = expires_ms
        return f"{self.base}/robot/sendBySession?session={sid}"

    def find(self, route: str, pred: Callable[[Call], bool] | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.route == route and (pred is None or pred(c))]

    def last_seq(self) -> int:
        with self._lock:
            return self.calls[-1].seq if self.calls else 0

    def dump(self, since_seq: int = 0) -> str:
        with self._lock:
            calls = [c for c in self.calls if c.seq > since_seq]
        if not calls:
            return "<no calls>"
        return "\n".join(c.describe() for c in calls)

    # ---- dispatch ----------------------------------------------------------

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(target)
        call = Call(
            seq=0,
            route="?",
            method=method,
            path=parts.path,
            raw_query=parts.query,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
        )
        route, fn = self._route(method, parts.path)
        call.route = route
        try:
            if fn is None:
                raise Reject(404, {"error": "not found"}, f"no such endpoint: {method} {parts.path}")
            status, resp = 200, fn(call)
        except Reject as r:
            status, resp = r.status, r.body
            call.problems.append(r.problem)
        except Exception as exc:  # a bug in the mock itself
            status, resp = 500, {"error": "mock failure"}
            call.problems.append(f"mock raised {exc!r}")
        call.status, call.response = status, resp
        with self._cond:
            call.seq = next(self._seq)
            self.calls.append(call)
            self._cond.notify_all()
        return status, "application/json; charset=utf-8", json.dumps(resp).encode()

    def _route(self, method: str, path: str) -> tuple[str, Callable[[Call], Any] | None]:
        table: list[tuple[str, str, str, Callable[[Call], Any]]] = [
            ("POST", "/v1.0/oauth2/accessToken", "dingtalk.token", self._dt_token),
            ("POST", "/v1.0/robot/oToMessages/batchSend", "dingtalk.batch_send", self._dt_batch_send),
            ("POST", "/v1.0/robot/groupMessages/send", "dingtalk.group_send", self._dt_group_send),
            ("POST", "/robot/sendBySession", "dingtalk.session_webhook", self._dt_session),
            ("POST", "/robot/send", "dingtalk.robot", self._dt_robot),
            ("POST", "/open-apis/auth/v3/tenant_access_token/internal", "feishu.token", self._fs_token),
            ("POST", f"/open-apis/bot/v2/hook/{FS_HOOK_ID}", "feishu.bot", self._fs_bot),
            ("POST", "/callback/ws/endpoint", "feishu.ws_endpoint", self._fs_ws_endpoint),
            ("GET", "/cgi-bin/gettoken", "wecom.token", self._wc_token),
            ("POST", "/cgi-bin/message/send", "wecom.send", self._wc_send),
            ("POST", "/cgi-bin/webhook/send", "wecom.robot", self._wc_robot),
            ("POST", "/api/chat.postMessage", "slack.post_message", self._slack_post),
        ]
        for m, p, name, fn in table:
            if method == m and path == p:
                return name, fn
        if method == "POST" and path.startswith("/open-apis/im/v1/messages/") and path.endswith("/reply"):
            return "feishu.reply", self._fs_reply
        if path.startswith("/open-apis/bot/v2/hook/"):
            return "feishu.bot", self._fs_bot
        return f"unknown {method} {path}", None

    # ---- DingTalk ------------------------------------------------------------

    def _dt_token(self, c: Call) -> Any:
        err = {"code": "invalidClientIdOrSecret", "message": "无效的clientId或clientSecret"}
        b = _json_body(c, 400, err)
        _require(isinstance(b, dict), "body is not an object", 400, err)
        _require(b.get("appKey") == DT_APP_KEY, f"appKey {b.get('appKey')!r} is wrong", 400, err)
        _require(b.get("appSecret") == DT_APP_SECRET, "appSecret is wrong", 400, err)
        tok = "dt-" + secrets.token_hex(12)
        with self._lock:
            self.dt_tokens.add(tok)
        return {"accessToken": tok, "expireIn": 7200}

    def _dt_check_token(self, c: Call) -> None:
        tok = c.headers.get("x-acs-dingtalk-access-token")
        _require(
            tok is not None and tok in self.dt_tokens,
            f"x-acs-dingtalk-access-token {tok!r} was not issued by /v1.0/oauth2/accessToken",
            401,
            {"code": "InvalidAuthentication", "message": "不合法的access_token"},
        )

    @staticmethod
    def _dt_msg_param(b: dict, err: Any) -> None:
        key, param = b.get("msgKey"), b.get("msgParam")
        need = {
            "sampleText": ["content"],
            "sampleMarkdown": ["title", "text"],
            "sampleActionCard": ["title", "text", "singleTitle", "singleURL"],
        }
        _require(key in need, f"msgKey {key!r} is not a known template", 400, err)
        _require(isinstance(param, str), f"msgParam must be a JSON string, got {type(param).__name__}", 400, err)
        try:
            p = json.loads(param)
        except ValueError:
            raise Reject(400, err, f"msgParam is not JSON: {param!r}") from None
        _require(isinstance(p, dict), "msgParam is not a JSON object", 400, err)
        for k in need[key]:
            _require(_nonempty_str(p.get(k)), f"msgParam.{k} missing or empty for {key}", 400, err)

    def _dt_batch_send(self, c: Call) -> Any:
        err = {"code": "InvalidParameter", "message": "参数错误"}
        self._dt_check_token(c)
        b = _json_body(c, 400, err)
        _require(_nonempty_str(b.get("robotCode")), "robotCode missing", 400, err)
        users = b.get("userIds")
        _require(
            isinstance(users, list) and 1 <= len(users) <= 20 and all(_nonempty_str(u) for u in users),
            f"userIds must be 1..20 staff ids, got {users!r}",
            400,
            err,
        )
        self._dt_msg_param(b, err)
        return {"processQueryKey": secrets.token_hex(8), "invalidStaffIdList": [], "flowControlledStaffIdList": []}

    def _dt_group_send(self, c: Call) -> Any:
        err = {"code": "InvalidParameter", "message": "参数错误"}
        self._dt_check_token(c)
        b = _json_body(c, 400, err)
        _require(_nonempty_str(b.get("robotCode")), "robotCode missing", 400, err)
        _require(_nonempty_str(b.get("openConversationId")), "openConversationId missing", 400, err)
        self._dt_msg_param(b, err)
        return {"processQueryKey": secrets.token_hex(8)}

    @staticmethod
    def _dt_robot_message(b: Any) -> None:
        err = {"errcode": 40035, "errmsg": "缺少参数 json"}
        _require(isinstance(b, dict), "body is not an object", 200, err)
        t = b.get("msgtype")
        if t == "text":
            _require(_nonempty_str((b.get("text") or {}).get("content")), "text.content missing", 200, err)
        elif t == "markdown":
            md = b.get("markdown") or {}
            _require(_nonempty_str(md.get("title")), "markdown.title missing", 200, err)
            _require(_nonempty_str(md.get("text")), "markdown.text missing", 200, err)
        elif t == "actionCard":
            ac = b.get("actionCard") or {}
            for k in ("title", "text", "singleTitle", "singleURL"):
                _require(_nonempty_str(ac.get(k)), f"actionCard.{k} missing", 200, err)
        else:
            raise Reject(200, {"errcode": 40035, "errmsg": "不支持的消息类型"}, f"msgtype {t!r} unknown")
        at = b.get("at")
        if at is not None:
            _require(isinstance(at, dict), "at is not an object", 200, err)
            ids = at.get("atUserIds", [])
            _require(isinstance(ids, list) and all(_nonempty_str(i) for i in ids), "at.atUserIds malformed", 200, err)

    def _dt_session(self, c: Call) -> Any:
        sid = c.q("session")
        with self._lock:
            exp = self.sessions.get(sid or "")
        _require(exp is not None, f"unknown session {sid!r}", 200, {"errcode": 300001, "errmsg": "session不存在"})
        _require(
            time.time() * 1000 < exp,
            "session webhook used after sessionWebhookExpiredTime",
            200,
            {"errcode": 300001, "errmsg": "session已过期"},
        )
        b = _json_body(c, 200, {"errcode": 40035, "errmsg": "缺少参数 json"})
        self._dt_robot_message(b)
        return {"errcode": 0, "errmsg": "ok"}

    def _dt_robot(self, c: Call) -> Any:
        bad_token = {"errcode": 300001, "errmsg": "token is not exist"}
        bad_sign = {"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}
        _require(c.q("access_token") == DT_ROBOT_TOKEN, f"access_token {c.q('access_token')!r} wrong", 200, bad_token)
        # parse_qs URL-decodes exactly once, as DingTalk does.
        ts, sign = c.q("timestamp"), c.q("sign")
        _require(ts is not None and sign is not None, "timestamp or sign query parameter missing", 200, bad_sign)
        _require(ts.isdigit(), f"timestamp {ts!r} is not milliseconds", 200, bad_sign)
        _require(
            abs(time.time() * 1000 - int(ts)) <= ROBOT_WINDOW_S * 1000,
            f"timestamp {ts} is more than 1 h from now",
            200,
            bad_sign,
        )
        want = dingtalk_sign(DT_ROBOT_SECRET, ts)
        _require(hmac.compare_digest(want, sign), f"sign {sign!r} != expected {want!r}", 200, bad_sign)
        b = _json_body(c, 200, {"errcode": 40035, "errmsg": "缺少参数 json"})
        self._dt_robot_message(b)
        return {"errcode": 0, "errmsg": "ok"}

    # ---- Feishu --------------------------------------------------------------

    def _fs_token(self, c: Call) -> Any:
        err = {"code": 10014, "msg": "app secret invalid"}
        b = _json_body(c, 400, {"code": 9499, "msg": "Bad Request"})
        _require(b.get("app_id") == FS_APP_ID, f"app_id {b.get('app_id')!r} wrong", 200, {"code": 10003, "msg": "invalid param"})
        _require(b.get("app_secret") == FS_APP_SECRET, "app_secret wrong", 200, err)
        tok = "t-" + secrets.token_hex(16)
        with self._lock:
            self.fs_tokens.add(tok)
        return {"code": 0, "msg": "ok", "tenant_access_token": tok, "expire": 7200}

    def _fs_reply(self, c: Call) -> Any:
        bad_tok = {
            "code": 99991663,
            "msg": "Invalid access token for authorization. Please make a request with token attached.",
        }
        auth = c.headers.get("authorization", "")
        _require(auth.startswith("Bearer "), f"Authorization {auth!r} is not 'Bearer <token>'", 400, bad_tok)
        _require(auth[len("Bearer "):] in self.fs_tokens, "tenant_access_token was not issued", 400, bad_tok)
        mid = c.path[len("/open-apis/im/v1/messages/"):-len("/reply")]
        err = {"code": 230001, "msg": "Your request contains an invalid request parameter."}
        _require(mid.startswith("om_"), f"message id {mid!r} is not an om_ id", 400, err)
        b = _json_body(c, 400, err)
        mt, content = b.get("msg_type"), b.get("content")
        _require(mt in ("text", "post", "interactive"), f"msg_type {mt!r} unexpected", 400, err)
        _require(isinstance(content, str), f"content must be a JSON string, got {type(content).__name__}", 400, err)
        try:
            parsed = json.loads(content)
        except ValueError:
            raise Reject(400, err, f"content is not JSON: {content!r}") from None
        if mt == "text":
            _require(_nonempty_str((parsed or {}).get("text")), "content.text missing", 400, err)
        elif mt == "interactive":
            _require(isinstance(parsed, dict), "content is not a JSON object", 400, err)
            _check_card(parsed, err)
        else:
            _require(isinstance(parsed, dict), "content is not a JSON object", 400, err)
        return {
            "code": 0,
            "msg": "success",
            "data": {"message_id": "om_" + secrets.token_hex(12), "root_id": mid, "parent_id": mid, "msg_type": mt},
        }

    def _fs_bot(self, c: Call) -> Any:
        bad_hook = {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}
        _require(c.path == f"/open-apis/bot/v2/hook/{FS_HOOK_ID}", f"unknown hook {c.path}", 200, bad_hook)
        b = _json_body(c, 200, {"code": 9499, "msg": "Bad Request"})
        bad_sign = {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
        ts, sign = b.get("timestamp"), b.get("sign")
        _require(ts is not None and sign is not None, "timestamp or sign missing from the body", 200, bad_sign)
        ts = str(ts)
        _require(ts.isdigit(), f"timestamp {ts!r} is not seconds", 200, bad_sign)
        _require(
            abs(time.time() - int(ts)) <= ROBOT_WINDOW_S,
            f"timestamp {ts} is more than 1 h from now (seconds expected)",
            200,
            bad_sign,
        )
        want = feishu_bot_sign(FS_HOOK_SECRET, ts)
        _require(isinstance(sign, str) and hmac.compare_digest(want, sign), f"sign {sign!r} != expected {want!r}", 200, bad_sign)
        _require(len(c.body) <= 20 * 1024, "body over 20 KB", 200, {"code": 9499, "msg": "request body too large"})
        mt = b.get("msg_type")
        err = {"code": 9499, "msg": "Bad Request"}
        if mt == "text":
            _require(_nonempty_str((b.get("content") or {}).get("text")), "content.text missing", 200, err)
        elif mt in ("post", "interactive"):
            _require(isinstance(b.get("content") or b.get("card"), dict), "content/card missing", 200, err)
        else:
            raise Reject(200, err, f"msg_type {mt!r} unexpected")
        return {"code": 0, "msg": "success", "data": {}}

    def _fs_ws_endpoint(self, c: Call) -> Any:
        b = _json_body(c, 200, {"code": 1, "msg": "system busy"})
        bad = {"code": 1000040343, "msg": "invalid app credentials"}
        _require(b.get("AppID") == FS_APP_ID, f"AppID {b.get('AppID')!r} wrong", 200, bad)
        _require(b.get("AppSecret") == FS_APP_SECRET, "AppSecret wrong", 200, bad)
        _require(self.ws_url is not None, "no long-connection server configured", 200, {"code": 1, "msg": "system busy"})
        return {
            "code": 0,
            "msg": "ok",
            "data": {
                "URL": self.ws_url,
                "ClientConfig": {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120},
            },
        }

    # ---- WeCom -----------------------------------------------------------------

    def _wc_token(self, c: Call) -> Any:
        _require(c.q("corpid") == WC_CORP_ID, f"corpid {c.q('corpid')!r} wrong", 200, {"errcode": 40013, "errmsg": "invalid corpid"})
        _require(c.q("corpsecret") == WC_SECRET, "corpsecret wrong", 200, {"errcode": 40001, "errmsg": "invalid credential"})
        tok = "wc-" + secrets.token_hex(16)
        with self._lock:
            self.wc_tokens.add(tok)
        return {"errcode": 0, "errmsg": "ok", "access_token": tok, "expires_in": 7200}

    def _wc_send(self, c: Call) -> Any:
        tok = c.q("access_token")
        _require(tok is not None and tok in self.wc_tokens, f"access_token {tok!r} was not issued", 200, {"errcode": 40014, "errmsg": "invalid access_token"})
        b = _json_body(c, 200, {"errcode": 40035, "errmsg": "invalid json"})
        _require(_nonempty_str(b.get("touser")), f"touser {b.get('touser')!r} missing", 200, {"errcode": 40031, "errmsg": "invalid user list"})
        agent = b.get("agentid")
        # WeCom documents agentid as an integer; a numeric string is tolerated
        # by the API, anything else is errcode 40056.
        _require(
            (isinstance(agent, int) and not isinstance(agent, bool) and agent == WC_AGENT_ID)
            or (isinstance(agent, str) and agent == str(WC_AGENT_ID)),
            f"agentid {agent!r} is not {WC_AGENT_ID}",
            200,
            {"errcode": 40056, "errmsg": "invalid agentid"},
        )
        mt = b.get("msgtype")
        if mt == "text":
            content = (b.get("text") or {}).get("content")
            _require(_nonempty_str(content), "text.content missing", 200, {"errcode": 41009, "errmsg": "missing content"})
            _require(len(content.encode()) <= 2048, "text.content over 2048 bytes", 200, {"errcode": 44004, "errmsg": "content too long"})
        elif mt == "markdown":
            content = (b.get("markdown") or {}).get("content")
            _require(_nonempty_str(content), "markdown.content missing", 200, {"errcode": 41009, "errmsg": "missing content"})
        else:
            raise Reject(200, {"errcode": 40008, "errmsg": "invalid message type"}, f"msgtype {mt!r} unexpected")
        return {"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": secrets.token_hex(10)}

    def _wc_robot(self, c: Call) -> Any:
        _require(c.q("key") == WC_ROBOT_KEY, f"key {c.q('key')!r} wrong", 200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        b = _json_body(c, 200, {"errcode": 40035, "errmsg": "invalid json"})
        mt = b.get("msgtype")
        if mt == "text":
            content = (b.get("text") or {}).get("content")
            limit = 2048
        elif mt == "markdown":
            content = (b.get("markdown") or {}).get("content")
            limit = 4096
        else:
            raise Reject(200, {"errcode": 40008, "errmsg": "invalid message type"}, f"msgtype {mt!r} unexpected")
        _require(_nonempty_str(content), f"{mt}.content missing", 200, {"errcode": 41009, "errmsg": "missing content"})
        _require(len(content.encode()) <= limit, f"{mt}.content over {limit} bytes", 200, {"errcode": 44004, "errmsg": "content too long"})
        return {"errcode": 0, "errmsg": "ok"}

    # ---- Slack -----------------------------------------------------------------

    def _slack_post(self, c: Call) -> Any:
        auth = c.headers.get("authorization")
        _require(auth is not None, "no Authorization header", 200, {"ok": False, "error": "not_authed"})
        _require(auth == f"Bearer {SLACK_BOT_TOKEN}", f"Authorization {auth!r} is not the bot token", 200, {"ok": False, "error": "invalid_auth"})
        ctype = c.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                b = json.loads(c.body)
            except ValueError:
                raise Reject(200, {"ok": False, "error": "invalid_json"}, "body is not JSON") from None
        elif ctype == "application/x-www-form-urlencoded":
            b = {k: v[0] for k, v in parse_qs(c.body.decode()).items()}
        else:
            raise Reject(200, {"ok": False, "error": "invalid_form_data"}, f"Content-Type {ctype!r}")
        _require(_nonempty_str(b.get("channel")), "channel missing", 200, {"ok": False, "error": "channel_not_found"})
        _require(
            _nonempty_str(b.get("text")) or bool(b.get("blocks")) or bool(b.get("attachments")),
            "no text, blocks or attachments",
            200,
            {"ok": False, "error": "no_text"},
        )
        if "thread_ts" in b and b["thread_ts"] is not None:
            _require(isinstance(b["thread_ts"], str), "thread_ts must be a string", 200, {"ok": False, "error": "invalid_thread_ts"})
        ts = f"{time.time():.6f}"
        return {"ok": True, "channel": b["channel"], "ts": ts, "message": {"text": b.get("text"), "ts": ts}}


# ---------------------------------------------------------------------------
# Feishu long connection: the WebSocket server side, speaking lark-oapi's
# own protobuf frames (lark_oapi.ws.pb.pbbp2_pb2.Frame).
# ---------------------------------------------------------------------------


class FeishuWsServer:
    """A WebSocket server in its own thread and event loop. Records every
    frame the client sends (decoded with the SDK's Frame class), answers
    pings with a pong carrying a ClientConfig, and lets the test push data
    frames."""

    def __init__(self) -> None:
        from lark_oapi.ws.pb.pbbp2_pb2 import Frame

        self.Frame = Frame
        self._lock = threading.Condition()
        self.frames: list[Any] = []  # every frame received, parsed
        self.undecodable: list[str] = []
        self.connections = 0
        self.paths: list[str] = []
        self._conn = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feishu-ws", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"websocket server did not start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to the constructor
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = self._loop.create_future()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?device_id={FS_WS_DEVICE_ID}&service_id={FS_WS_SERVICE_ID}"

    async def _handler(self, conn: Any) -> None:
        with self._lock:
            self.connections += 1
            self.paths.append(conn.request.path)
            self._conn = conn
            self._lock.notify_all()
        try:
            async for msg in conn:
                if isinstance(msg, str):
                    with self._lock:
                        self.undecodable.append(f"text message {msg[:200]!r}")
                        self._lock.notify_all()
                    continue
                frame = self.Frame()
                try:
                    frame.ParseFromString(msg)
                except Exception as exc:
                    with self._lock:
                        self.undecodable.append(f"{exc!r} on {msg[:200]!r}")
                        self._lock.notify_all()
                    continue
                with self._lock:
                    self.frames.append(frame)
                    self._lock.notify_all()
                if frame.method == 0 and header(frame, "type") == "ping":
                    pong = self.Frame()
                    pong.SeqID = 0
                    pong.LogID = 0
                    pong.service = frame.service
                    pong.method = 0
                    h = pong.headers.add()
                    h.key, h.value = "type", "pong"
                    pong.payload = json.dumps(
                        {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120}
                    ).encode()
                    await conn.send(pong.SerializeToString())
        except Exception:
            pass
        finally:
            with self._lock:
                if self._conn is conn:
                    self._conn = None
                self._lock.notify_all()

    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self._lock.wait(min(left, 0.1))

    def connected(self) -> bool:
        return self._conn is not None

    def send_frame(self, frame: Any) -> None:
        conn = self._conn
        if conn is None:
            raise AssertionError("no long connection is open")
        fut = asyncio.run_coroutine_threadsafe(conn.send(frame.SerializeToString()), self._loop)
        fut.result(timeout=5)

    def data_frame(self, message_id: str, payload: bytes, trace_id: str, seq_id: int) -> Any:
        f = self.Frame()
        f.SeqID = seq_id
        f.LogID = seq_id + 1000
        f.service = FS_WS_SERVICE_ID
        f.method = 1
        for k, v in (("type", "event"), ("message_id", message_id), ("sum", "1"), ("seq", "0"), ("trace_id", trace_id)):
            h = f.headers.add()
            h.key, h.value = k, v
        f.payload = payload
        return f

    def answers_for(self, message_id: str) -> list[Any]:
        with self._lock:
            return [f for f in self.frames if f.method == 1 and header(f, "message_id") == message_id]

    def pings(self) -> list[Any]:
        with self._lock:
            return [f for f in self.frames if f.method == 0 and header(f, "type") == "ping"]

    def describe(self) -> str:
        with self._lock:
            lines = [f"connections: {self.connections} paths: {self.paths}"]
            for f in self.frames[-20:]:
                hs = {h.key: h.value for h in f.headers}
                lines.append(
                    f"  frame method={f.method} service={f.service} SeqID={f.SeqID} LogID={f.LogID} "
                    f"headers={hs} payload={bytes(f.payload)[:300]!r}"
                )
            lines += [f"  UNDECODABLE: {u}" for u in self.undecodable]
        return "\n".join(lines)

    def close(self) -> None:
        def stop() -> None:
            if self._stop is not None and not self._stop.done():
                self._stop.set_result(None)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=5)


def header(frame: Any, key: str) -> str | None:
    for h in frame.headers:
        if h.key == key:
            return h.value
    return None
