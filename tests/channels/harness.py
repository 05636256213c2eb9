"""Shared pieces of the channel tests: constants, HTTP, the runtime handle,
the durable-record probes (SQLite log database or Redis), waiting. Starting
and stopping processes is tests/pyharness.py's (shared with tests/python)."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import mockplatform as mp
from pyharness import Service

REPLY = "Hello from the mock model: here is a café answer."
MODEL = "mock-model"
UPSTREAM_KEY = "upstream-secret"
ADMIN_KEY = "channels-admin-key-0001"
USER_KEY = "channels-user-key-0001"
BODY_LIMIT = 64 * 1024
FEISHU_WINDOW_S = 3600
# The card-format runtime's DingTalk ActionCard button.
CARD_URL = "https://intranet.example.com/helpdesk"
CARD_BUTTON = "Open the helpdesk"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

# How long a reply may take to reach the mock platform.
REPLY_TIMEOUT_S = 8.0


def uid(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:16]


def wait_for(
    pred: Callable[[], Any],
    what: str,
    timeout: float = REPLY_TIMEOUT_S,
    context: Callable[[], str] | None = None,
) -> Any:
    """Polls `pred` until it returns something truthy; fails naming `what`
    (and `context()`, e.g. what the mock platform received) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            ctx = context() if context else ""
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}\n{ctx}", pytrace=False)
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Redis: a minimal RESP client, enough to probe and clean our keys
# ---------------------------------------------------------------------------


def redis_cmd(*args: str, timeout: float = 3.0) -> Any:
    def enc(a: str) -> bytes:
        b = a.encode()
        return b"$%d\r\n%s\r\n" % (len(b), b)

    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=timeout) as s:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(enc(a) for a in args))
        f = s.makefile("rb")

        def read() -> Any:
            line = f.readline()
            if not line:
                raise ConnectionError("Redis closed the connection")
            kind, rest = line[:1], line[1:-2]
            if kind == b"+":
                return rest.decode()
            if kind == b"-":
                raise RuntimeError(f"Redis error: {rest.decode()}")
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError(f"unexpected RESP line {line!r}")

        return read()


@dataclass
class Backend:
    """Where deliveries are recorded: `sqlite` (the log database under the
    runtime's data_dir) or `redis` (a stream under a per-run key prefix)."""

    name: str
    key_prefix: str | None = None

    def redis_url(self) -> str | None:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/0" if self.name == "redis" else None


# ---------------------------------------------------------------------------
# HTTP and the runtime handle
# ---------------------------------------------------------------------------


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HTTP {self.status} {self.body[:500]!r}"


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HttpResult:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@dataclass
class Runtime:
    service: Service
    port: int
    data_dir: Path
    backend: Backend
    platform: mp.MockPlatform
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> HttpResult:
        return http("POST", self.url + path, body, headers)

    def get(self, path: str, headers: dict[str, str] | None = None) -> HttpResult:
        return http("GET", self.url + path, None, headers)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        text = self.get("/metrics").body.decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def _query(self, sql: str, args: tuple, db_file: str = "clawdbot.db") -> list[tuple]:
        # Conversation logs live in clawdbot.db; without Redis, IM deliveries
        # in its channel_deliveries table too.
        db = self.data_dir / db_file
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def logged_inputs(self, channel: str) -> list[str]:
        """What the model was asked on a channel, from the conversation log
        (the SQLite log database with either delivery backend)."""
        return [r[0] for r in self._query("SELECT user_input FROM conversation_logs WHERE channel = ?", (channel,))]

    def wait_logged_input(self, channel: str, text: str) -> None:
        """The model got exactly `text` (the bot's @-mention removed)."""
        wait_for(
            lambda: text in self.logged_inputs(channel),
            f"the conversation log to show {text!r} asked on {channel}",
            context=lambda: f"logged {channel} inputs: {self.logged_inputs(channel)[-10:]}",
        )

    def delivery_state(self, dedupe_key: str) -> str | None:
        """The durable record of a delivery (`platform:id`): its state, or
        None when it was never recorded."""
        if self.backend.name == "redis":
            return redis_cmd("GET", f"{self.backend.key_prefix}delivery:{dedupe_key}")
        rows = self._query(
            "SELECT state FROM channel_deliveries WHERE dedupe_key = ?", (dedupe_key,)
        )
        return rows[0][0] if rows else None
