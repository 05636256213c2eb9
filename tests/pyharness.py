"""Process harness shared by the Python test suites (tests/python,
tests/channels, tests/deploy): require a binary named by an environment
variable, start it with its output in a log file, wait until it is ready,
read its log back for failure reports (tests/attach_logs.py), stop it.

Plain standard library on purpose: each suite runs in its own virtualenv, and
each adds this directory to sys.path from its conftest.py. Where a fixture has
to give up, these functions call the `fail` they are given; the suites pass
`pytest.fail(message, pytrace=False)`, so the failure reads as the message
alone, with the log tail it carries.
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
from typing import Callable, NoReturn

STARTUP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 6000

# Ends the test (or fixture) with this message; never returns.
Fail = Callable[[str], NoReturn]


def require_binary(var: str, hint: str, example: str, fail: Fail) -> str:
    """The absolute path of the executable that environment variable `var`
    names (a missing or unusable one fails; it is never a skip)."""
    path = os.environ.get(var)
    if not path:
        fail(
            f"environment variable {var} is not set; it must name the {hint} binary "
            f"(e.g. {var}={example})"
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        fail(f"{var}={path!r} is not an executable file")
    return os.path.abspath(path)


def _clip(text: str, limit: int) -> str:
    return "...\n" + text[-limit:] if len(text) > limit else text


def tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return _clip(text, limit) or "<empty>"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """A started process and the file its output goes to."""

    name: str
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
        return _clip(data.decode(errors="replace"), LOG_TAIL_CHARS)


def start_mock_upstream(binary: str, args: list[str], logdir: Path, fail: Fail) -> tuple[Service, str]:
    """Starts mock-upstream on a free port (with `args` after `--listen`) and
    waits for its 'listening on http://ADDR' line: (service, "host:port")."""
    log = logdir / "mock-upstream.log"
    cmd = [binary, "--listen", "127.0.0.1:0", *args]
    # stderr and the stdout pump below both append, so neither overwrites the other.
    log.write_bytes(b"")
    with log.open("ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf, cwd=logdir)

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

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            line = ""  # nothing yet (failing here would chain the Empty into the report)
        if line is None:
            code = proc.wait(timeout=5)
            fail(
                f"mock-upstream exited (status {code}) before it was listening\n"
                f"command: {cmd}\nlog {log}:\n{tail(log)}"
            )
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            return Service("mock-upstream", proc, log), m.group(1).rstrip("/")
        if time.monotonic() >= deadline:
            stop(proc)
            fail(
                f"mock-upstream printed no 'listening on http://ADDR' line within {STARTUP_TIMEOUT_S:.0f}s\n"
                f"command: {cmd}\nlog {log}:\n{tail(log)}"
            )


def runtime_env(drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The caller's environment for bot-runtime, minus anything that could
    configure it differently from what the tests set (and minus `drop`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAWDBOT_", "MODEL_", "OPENAI_")) and k not in drop
    }
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def start_until_ready(
    name: str,
    cmd: list[str],
    workdir: Path,
    port: int,
    env: dict[str, str],
    fail: Fail,
    exit_details: str = "",
) -> Service:
    """Starts `cmd` in `workdir` (a scratch directory: nothing it writes
    relative to its working directory lands in the repository), output to
    workdir/bot-runtime.log, and waits until its /health/ready on `port`
    answers 200. `exit_details` (e.g. its config) goes before the log tail
    when the process exits first."""
    log = workdir / "bot-runtime.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
    ready_url = f"http://127.0.0.1:{port}/health/ready"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            fail(
                f"{name} exited (status {code}) before {ready_url} answered 200\n"
                f"{exit_details}log {log}:\n{tail(log)}"
            )
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as resp:
                if resp.status == 200:
                    return Service(name, proc, log)
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            stop(proc)
            fail(
                f"{name} not ready: {ready_url} did not answer 200 within {STARTUP_TIMEOUT_S:.0f}s "
                f"(last: {last})\nlog {log}:\n{tail(log)}"
            )
        time.sleep(0.1)


# --- the services' logs in failure reports ---------------------------------


def log_offsets(services: dict[str, Service]) -> dict[str, int]:
    """Where each service's log ends now (taken as a test starts)."""
    return {name: s.log_size() for name, s in services.items()}


def log_sections(services: dict[str, Service], offsets: dict[str, int]) -> list[tuple[str, str]]:
    """Report sections: what each service logged since `offsets`."""
    return [
        (f"{name} log during this test ({s.log})", s.log_since(offsets.get(name, 0)))
        for name, s in services.items()
    ]
