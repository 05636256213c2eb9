"""Fixtures for the OpenAI-client compatibility tests.

Session-scoped: one mock upstream (MOCK_UPSTREAM_BIN) and one bot-runtime
(BOT_RUNTIME_BIN) pointed at it. Both binaries are required; a missing or
non-executable path fails every test (it is never a skip).

When a test fails, the lines the runtime and the mock logged while that test
ran are attached to its failure report.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# The mock's canned reply. Several words, so a stream has several content
# chunks; punctuation and a non-ASCII word check that text survives the proxy
# byte-for-byte.
REPLY = "Hello from the mock upstream, here is a café reply."
MODEL = "mock-model"
API_KEY = "test-key-1"
UPSTREAM_KEY = "upstream-secret"
# Delay the mock puts between stream chunks; lets a test check that the
# runtime forwards chunks as they come instead of buffering the stream.
CHUNK_DELAY_MS = 40

STARTUP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 6000


def _require_binary(var: str, hint: str, example: str) -> str:
    path = os.environ.get(var)
    if not path:
        pytest.fail(
            f"environment variable {var} is not set; it must name the {hint} binary "
            f"(e.g. {var}={example})",
            pytrace=False,
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(f"{var}={path!r} is not an executable file", pytrace=False)
    return os.path.abspath(path)


def _tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text or "<empty>"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    log: Path

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError as exc:
            return f"<cannot read {self.log}: {exc}>"
        text = data.decode(errors="replace")
        if len(text) > LOG_TAIL_CHARS:
            text = "...\n" + text[-LOG_TAIL_CHARS:]
        return text


@dataclass
class Upstream(Service):
    addr: str  # host:port


@dataclass
class Runtime(Service):
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


_SERVICES: dict[str, Service] = {}


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    binary = _require_binary(
        "MOCK_UPSTREAM_BIN", "mock-upstream", "target/debug/mock-upstream"
    )
    logdir = tmp_path_factory.mktemp("mock-upstream")
    log = logdir / "mock-upstream.log"
    cmd = [
        binary,
        "--listen", "127.0.0.1:0",
        "--reply", REPLY,
        "--model", MODEL,
        "--chunk-delay-ms", str(CHUNK_DELAY_MS),
    ]
    logf = log.open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf, cwd=logdir
    )
    logf.close()

    # Read stdout on a thread (a bounded wait on a pipe), copying every line
    # into the log so a chatty mock can never block on a full pipe.
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with log.open("ab") as out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                lines.put(raw.decode(errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, name="mock-upstream-stdout", daemon=True).start()

    addr = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while addr is None:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            line = ""
            if time.monotonic() >= deadline:
                _stop(proc)
                pytest.fail(
                    f"mock-upstream printed no 'listening on http://ADDR' line within "
                    f"{STARTUP_TIMEOUT_S:.0f}s\ncommand: {cmd}\nlog {log}:\n{_tail(log)}",
                    pytrace=False,
                )
        if line is None:
            code = proc.wait(timeout=5)
            pytest.fail(
                f"mock-upstream exited (status {code}) before it was listening\n"
                f"command: {cmd}\nlog {log}:\n{_tail(log)}",
                pytrace=False,
            )
        m = re.search(r"listening on http://(\S+)", line or "")
        if m:
            addr = m.group(1).rstrip("/")

    service = Upstream(proc=proc, log=log, addr=addr)
    _SERVICES["mock-upstream"] = service
    yield service
    _SERVICES.pop("mock-upstream", None)
    _stop(proc)


@pytest.fixture(scope="session")
def runtime(mock_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    binary = _require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime")
    workdir = tmp_path_factory.mktemp("bot-runtime")
    log = workdir / "bot-runtime.log"
    port = _free_port()

    # Start from the caller's environment minus anything that could configure
    # the runtime differently from what these tests expect.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAWDBOT_", "MODEL_", "OPENAI_"))
    }
    env.update(
        MODEL_ENDPOINT=f"http://{mock_upstream.addr}/v1",
        MODEL_NAME=MODEL,
        MODEL_API_KEY=UPSTREAM_KEY,
        CLAWDBOT_LISTEN=f"127.0.0.1:{port}",
        CLAWDBOT_API_KEYS=API_KEY,
    )
    env.setdefault("RUST_BACKTRACE", "1")

    with log.open("wb") as logf:
        # cwd is a scratch directory so that anything the runtime writes
        # relative to its working directory stays out of the repository.
        proc = subprocess.Popen(
            [binary], stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=env, cwd=workdir,
        )

    ready_url = f"http://127.0.0.1:{port}/health/ready"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            pytest.fail(
                f"bot-runtime exited (status {code}) before {ready_url} answered 200\n"
                f"log {log}:\n{_tail(log)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as resp:
                if resp.status == 200:
                    break
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            _stop(proc)
            pytest.fail(
                f"bot-runtime not ready: {ready_url} did not answer 200 within "
                f"{STARTUP_TIMEOUT_S:.0f}s (last: {last})\nlog {log}:\n{_tail(log)}",
                pytrace=False,
            )
        time.sleep(0.1)

    service = Runtime(proc=proc, log=log, port=port)
    _SERVICES["bot-runtime"] = service
    yield service
    _SERVICES.pop("bot-runtime", None)
    _stop(proc)


# --- attach the services' logs to failing tests ------------------------------

_LOG_OFFSETS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    # Session fixtures are up by now; remember where their logs end.
    item.stash[_LOG_OFFSETS] = {name: s.log_size() for name, s in _SERVICES.items()}
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed:
        offsets = item.stash.get(_LOG_OFFSETS, {})
        for name, service in _SERVICES.items():
            text = service.log_since(offsets.get(name, 0))
            report.sections.append((f"{name} log during this test ({service.log})", text))
    return report
