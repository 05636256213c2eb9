"""Fixtures for the IM channel tests.

The platforms' official SDKs (lark-oapi, slack_sdk, wechatpy) build, sign
and encrypt what the "platform" sends to bot-runtime's webhooks, and check
it before it is sent; a mock platform server (mockplatform.py) receives our
replies and notifications and checks them as the platform would.

Processes (session-scoped): one mock model upstream (MOCK_UPSTREAM_BIN), and
per delivery backend (`sqlite`: the log database records deliveries;
`redis`: a Redis stream under a key prefix unique to the run) one bot-runtime
(BOT_RUNTIME_BIN) with every channel on in webhook mode, plus one with Feishu
in long-connection mode. Both binaries are required; a missing binary or an
unreachable Redis fails the tests (never a skip).

When a test fails, the calls the mock platforms received and the lines the
runtimes logged while it ran are attached to the report.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

# The process harness shared with tests/python (plain stdlib: tests/pyharness.py).
sys.path.append(str(Path(__file__).resolve().parent.parent))
import pyharness as ph  # noqa: E402
from pyharness import Service  # noqa: E402

import mockplatform as mp  # noqa: E402
from harness import (  # noqa: E402
    ADMIN_KEY,
    BODY_LIMIT,
    CARD_BUTTON,
    CARD_URL,
    FEISHU_WINDOW_S,
    MODEL,
    REDIS_HOST,
    REDIS_PORT,
    REPLY,
    UPSTREAM_KEY,
    USER_KEY,
    Backend,
    Runtime,
    redis_cmd,
)

# Everything whose output is attached to a failing test's report.
_SERVICES: dict[str, Service] = {}
_PLATFORMS: dict[str, mp.MockPlatform] = {}
_WS_SERVERS: dict[str, mp.FeishuWsServer] = {}


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model: answers every chat completion with REPLY. Yields host:port."""
    binary = ph.require_binary("MOCK_UPSTREAM_BIN", "mock-upstream", "target/debug/mock-upstream", _fail)
    args = ["--reply", REPLY, "--model", MODEL]
    service, addr = ph.start_mock_upstream(binary, args, tmp_path_factory.mktemp("mock-upstream"), _fail)
    _SERVICES["mock-upstream"] = service
    yield addr
    _SERVICES.pop("mock-upstream", None)
    ph.stop(service.proc)


@pytest.fixture(scope="session", params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every test runs once per delivery backend."""
    if request.param == "sqlite":
        yield Backend("sqlite")
        return
    try:
        pong = redis_cmd("PING")
    except OSError as exc:
        pytest.fail(
            f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT} ({exc}); "
            "start it with scripts/ensure-services.sh",
            pytrace=False,
        )
    assert pong == "PONG", pong
    prefix = f"clawdbot-channels-test-{uuid.uuid4().hex[:12]}:"
    yield Backend("redis", key_prefix=prefix)
    # Leave nothing behind in the shared Redis.
    cursor = "0"
    while True:
        cursor, keys = redis_cmd("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
        if keys:
            redis_cmd("DEL", *keys)
        if cursor == "0":
            break


@pytest.fixture(scope="session")
def platform() -> mp.MockPlatform:
    p = mp.MockPlatform()
    _PLATFORMS["mock platform (webhook runtime)"] = p
    yield p
    _PLATFORMS.pop("mock platform (webhook runtime)", None)
    p.close()


def _start_runtime(
    name: str, cfg: dict, workdir: Path, backend: Backend, platform: mp.MockPlatform, prefix_suffix: str = ""
) -> Runtime:
    binary = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", _fail)
    port = ph.free_port()
    data_dir = workdir / "data"
    data_dir.mkdir()
    cfg.setdefault("server", {}).update(listen=f"127.0.0.1:{port}", data_dir=str(data_dir))
    if backend.name == "redis":
        # Runtimes sharing a prefix are replicas of one bot: they share the
        # delivery stream. Differently configured runtimes get their own.
        backend = Backend(backend.name, key_prefix=f"{backend.key_prefix}{prefix_suffix}")
        cfg["redis"] = {"url": backend.redis_url(), "key_prefix": backend.key_prefix}
    config_file = workdir / "config.yaml"
    # JSON is YAML: no YAML library, no quoting surprises.
    config_file.write_text(json.dumps(cfg, indent=2))
    # Nothing from the environment may configure the runtime differently
    # from the file.
    env = ph.runtime_env(drop=("REDIS_URL", "DATABASE_URL", "RUST_LOG"))
    env["NO_COLOR"] = "1"  # plain log lines in failure reports
    service = ph.start_until_ready(
        name,
        [binary, "--config", str(config_file)],
        workdir,
        port,
        env,
        _fail,
        exit_details=f"config {config_file}:\n{config_file.read_text()}\n",
    )
    return Runtime(service=service, port=port, data_dir=data_dir, backend=backend, platform=platform)


def _base_config(upstream: str) -> dict:
    return {
        # Tests post many webhooks from one address.
        "server": {"rate_limit": {"requests_per_second": 0, "burst": 1}},
        "auth": {
            "api_keys": [
                {"key": ADMIN_KEY, "scope": "admin", "name": "admin"},
                {"key": USER_KEY, "scope": "user", "name": "user"},
            ]
        },
        "model": {"endpoint": f"http://{upstream}/v1", "api_key": UPSTREAM_KEY, "name": MODEL},
        "logging": {"level": "info,bot_runtime=debug", "format": "text"},
        "channels": {"body_limit_bytes": BODY_LIMIT, "reply_attempts": 3},
    }


def _dingtalk_http(base: str) -> dict:
    """DingTalk in HTTP mode with the mock platform's app credentials."""
    return {
        "enabled": True,
        "mode": "http",
        "app_key": mp.DT_APP_KEY,
        "app_secret": mp.DT_APP_SECRET,
        "robot_code": mp.DT_ROBOT_CODE,
        "api_base": base,
    }


def _feishu_webhook(base: str) -> dict:
    """Feishu event subscription over HTTP, encrypted and token-checked."""
    return {
        "enabled": True,
        "mode": "webhook",
        "app_id": mp.FS_APP_ID,
        "app_secret": mp.FS_APP_SECRET,
        "verification_token": mp.FS_VERIFICATION_TOKEN,
        "encrypt_key": mp.FS_ENCRYPT_KEY,
        "api_base": base,
        "timestamp_window_secs": FEISHU_WINDOW_S,
    }


@pytest.fixture(scope="session")
def runtime(backend: Backend, platform: mp.MockPlatform, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """bot-runtime with all four channels on webhooks and every notification
    robot configured, every API base pointed at the mock platform."""
    base = platform.base
    cfg = _base_config(mock_upstream)
    cfg.update(
        dingtalk={
            **_dingtalk_http(base),
            "webhook_url": f"{base}/robot/send?access_token={mp.DT_ROBOT_TOKEN}",
            "secret": mp.DT_ROBOT_SECRET,
        },
        feishu={
            **_feishu_webhook(base),
            "notify_webhook_url": f"{base}/open-apis/bot/v2/hook/{mp.FS_HOOK_ID}",
            "notify_secret": mp.FS_HOOK_SECRET,
        },
        wecom={
            "enabled": True,
            "corp_id": mp.WC_CORP_ID,
            "agent_id": str(mp.WC_AGENT_ID),
            "secret": mp.WC_SECRET,
            "token": mp.WC_TOKEN,
            "encoding_aes_key": mp.WC_AES_KEY,
            "api_base": base,
            "robot_webhook_url": f"{base}/cgi-bin/webhook/send?key={mp.WC_ROBOT_KEY}",
        },
        slack={
            "enabled": True,
            "signing_secret": mp.SLACK_SIGNING_SECRET,
            "bot_token": mp.SLACK_BOT_TOKEN,
            # Slack's Web API base includes the /api prefix.
            "api_base": f"{base}/api",
        },
    )
    workdir = tmp_path_factory.mktemp(f"bot-runtime-{backend.name}")
    rt = _start_runtime(f"bot-runtime[{backend.name}]", cfg, workdir, backend, platform)
    _SERVICES["bot-runtime"] = rt.service
    yield rt
    _SERVICES.pop("bot-runtime", None)
    ph.stop(rt.service.proc)


@pytest.fixture(scope="session")
def cards_runtime(backend: Backend, platform: mp.MockPlatform, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """bot-runtime answering in cards: DingTalk (HTTP) with a one-button
    ActionCard and Feishu (webhook) with an interactive card, against the
    same mock platform; its own delivery stream (a differently configured
    bot)."""
    base = platform.base
    cfg = _base_config(mock_upstream)
    cfg.update(
        dingtalk={
            **_dingtalk_http(base),
            "reply_format": "action_card",
            "action_card_url": CARD_URL,
            "action_card_button": CARD_BUTTON,
        },
        feishu={**_feishu_webhook(base), "reply_format": "card"},
    )
    workdir = tmp_path_factory.mktemp(f"bot-runtime-cards-{backend.name}")
    rt = _start_runtime(f"bot-runtime-cards[{backend.name}]", cfg, workdir, backend, platform, prefix_suffix="cards:")
    _SERVICES["bot-runtime-cards"] = rt.service
    yield rt
    _SERVICES.pop("bot-runtime-cards", None)
    ph.stop(rt.service.proc)


@pytest.fixture(scope="session")
def ws_runtime(backend: Backend, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """bot-runtime with only Feishu on, over the long connection, against its
    own mock platform (endpoint call, token, replies) and WebSocket server."""
    plat = mp.MockPlatform()
    ws = mp.FeishuWsServer()
    plat.ws_url = ws.url
    _PLATFORMS["mock platform (long connection)"] = plat
    _WS_SERVERS["feishu long connection"] = ws
    cfg = _base_config(mock_upstream)
    cfg["feishu"] = {
        "enabled": True,
        "mode": "websocket",
        "app_id": mp.FS_APP_ID,
        "app_secret": mp.FS_APP_SECRET,
        "api_base": plat.base,
    }
    workdir = tmp_path_factory.mktemp(f"bot-runtime-ws-{backend.name}")
    rt = _start_runtime(f"bot-runtime-ws[{backend.name}]", cfg, workdir, backend, plat, prefix_suffix="ws:")
    rt.extra["ws"] = ws
    _SERVICES["bot-runtime-ws"] = rt.service
    yield rt
    _SERVICES.pop("bot-runtime-ws", None)
    ph.stop(rt.service.proc)
    ws.close()
    plat.close()
    _PLATFORMS.pop("mock platform (long connection)", None)
    _WS_SERVERS.pop("feishu long connection", None)


# --- attach what the mocks received and the runtimes logged to failures -----

_OFFSETS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    # Session fixtures are up by now; remember where everything stands.
    item.stash[_OFFSETS] = {
        "services": ph.log_offsets(_SERVICES),
        "platforms": {name: p.last_seq() for name, p in _PLATFORMS.items()},
    }
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed:
        offsets = item.stash.get(_OFFSETS, {"services": {}, "platforms": {}})
        for name, p in _PLATFORMS.items():
            report.sections.append((f"{name}: calls received during this test", p.dump(offsets["platforms"].get(name, 0))))
        for name, ws in _WS_SERVERS.items():
            report.sections.append((f"{name}: frames (last 20)", ws.describe()))
        report.sections.extend(ph.log_sections(_SERVICES, offsets["services"]))
    return report
