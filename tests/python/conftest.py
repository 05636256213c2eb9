"""Fixtures for the OpenAI-client compatibility tests.

Session-scoped: one mock upstream (MOCK_UPSTREAM_BIN) and one bot-runtime
(BOT_RUNTIME_BIN) pointed at it. Both binaries are required; a missing or
non-executable path fails every test (it is never a skip).

When a test fails, the lines the runtime and the mock logged while that test
ran are attached to its failure report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

# The process harness shared with tests/channels (plain stdlib: tests/pyharness.py).
sys.path.append(str(Path(__file__).resolve().parent.parent))
import pyharness as ph  # noqa: E402
from attach_logs import AttachLogs  # noqa: E402
from pyharness import Service  # noqa: E402

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


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


@dataclass
class Runtime:
    service: Service
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


_SERVICES: dict[str, Service] = {}


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model: answers every chat completion with REPLY. Yields host:port."""
    binary = ph.require_binary("MOCK_UPSTREAM_BIN", "mock-upstream", "target/debug/mock-upstream", _fail)
    args = ["--reply", REPLY, "--model", MODEL, "--chunk-delay-ms", str(CHUNK_DELAY_MS)]
    service, addr = ph.start_mock_upstream(binary, args, tmp_path_factory.mktemp("mock-upstream"), _fail)
    _SERVICES["mock-upstream"] = service
    yield addr
    _SERVICES.pop("mock-upstream", None)
    ph.stop(service.proc)


def _runtime(name: str, settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """bot-runtime with `settings` on a free port, API key API_KEY; yields
    it and stops it at the end of the session."""
    binary = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", _fail)
    port = ph.free_port()
    env = ph.runtime_env()
    env.update(settings, CLAWDBOT_LISTEN=f"127.0.0.1:{port}", CLAWDBOT_API_KEYS=API_KEY)
    service = ph.start_until_ready(name, [binary], tmp_path_factory.mktemp(name), port, env, _fail)
    _SERVICES[name] = service
    yield Runtime(service=service, port=port)
    _SERVICES.pop(name, None)
    ph.stop(service.proc)


@pytest.fixture(scope="session")
def runtime(mock_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    yield from _runtime("bot-runtime", {
        "MODEL_ENDPOINT": f"http://{mock_upstream}/v1",
        "MODEL_NAME": MODEL,
        "MODEL_API_KEY": UPSTREAM_KEY,
    }, tmp_path_factory)


# The default local model, fetched by `make test` (scripts/fetch-models.sh).
LOCAL_MODEL_FILE = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL = "SmolLM2-135M-Instruct.Q4_1"
LOCAL_PARALLEL = 2


@pytest.fixture(scope="session")
def local_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """bot-runtime on its in-process model: no upstream at all. Two
    sequences and no queue, so a third concurrent request is refused."""
    if not LOCAL_MODEL_FILE.is_file():
        _fail(f"{LOCAL_MODEL_FILE} is missing: run scripts/fetch-models.sh (make test does)")
    yield from _runtime("bot-runtime-local", {
        "MODEL_BACKEND": "local",
        "MODEL_PATH": str(LOCAL_MODEL_FILE),
        "CLAWDBOT_MODEL__LOCAL__PARALLEL": str(LOCAL_PARALLEL),
        "CLAWDBOT_MODEL__LOCAL__QUEUE": "0",
    }, tmp_path_factory)


# --- attach the services' logs to failing tests ------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(AttachLogs(_SERVICES), "attach-logs")
