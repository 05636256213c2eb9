"""examples/compose through a real Compose parser: Debian's docker-compose
(1.29.2, Compose Specification schema), whose `config` command loads,
validates, interpolates and merges files without a container engine.

Then the properties the example promises are read from the parser's
resolved output, not from the YAML as written (anchors and overrides
applied)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import pyharness as ph
from conftest import REPO, fail

COMPOSE_DIR = REPO / "examples" / "compose"
BASE = COMPOSE_DIR / "docker-compose.yml"
MYSQL = COMPOSE_DIR / "docker-compose.mysql.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
HEALTHCHECK = ["CMD", "/usr/local/bin/bot-runtime", "healthcheck"]
REPLICAS = ("bot-1", "bot-2")


def compose_bin() -> str:
    path = shutil.which("docker-compose")
    if not path:
        fail("docker-compose is not installed (Debian package docker-compose, 1.29.2)")
    return path


def compose_config(files: list[Path], env_file: Path) -> subprocess.CompletedProcess:
    cmd = [compose_bin(), "--env-file", str(env_file), "--project-directory", str(COMPOSE_DIR)]
    for f in files:
        cmd += ["-f", str(f)]
    # Only the env file configures it: the caller's environment might set
    # the same names.
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run([*cmd, "config"], capture_output=True, text=True, timeout=60, env=env)


def resolved(files: list[Path]) -> dict:
    r = compose_config(files, ENV_EXAMPLE)
    if r.returncode != 0:
        fail(f"docker-compose config rejects {[str(f) for f in files]}:\n{r.stderr}")
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def base() -> dict:
    return resolved([BASE])


@pytest.fixture(scope="module")
def mysql() -> dict:
    return resolved([BASE, MYSQL])


def test_replicas_are_locked_down(base: dict):
    for name in REPLICAS:
        s = base["services"][name]
        assert s["image"] == "clawdbot/bot-runtime:0.1.0"
        assert s["user"] == "65532:65532"
        assert s["read_only"] is True
        assert any(t.startswith("/tmp") for t in s["tmpfs"]), s["tmpfs"]
        assert s["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in s["security_opt"]
        assert s["restart"] in ("unless-stopped", "always", "on-failure")
        assert s["healthcheck"]["test"] == HEALTHCHECK
        assert s["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "db": {"condition": "service_healthy"},
        }
        # Its own named volume at the data dir (the spill file survives).
        data_dir = s["environment"]["CLAWDBOT_SERVER__DATA_DIR"]
        mounts = [v for v in s["volumes"] if v.split(":")[1] == data_dir]
        assert len(mounts) == 1 and mounts[0].split(":")[0] in base["volumes"], s["volumes"]
        # Metrics off the proxied port; nothing published but by nginx.
        assert s["environment"]["CLAWDBOT_METRICS_LISTEN"].endswith(":9090")
        assert "ports" not in s
    vols = [base["services"][n]["volumes"][0].split(":")[0] for n in REPLICAS]
    assert len(set(vols)) == 2, "replicas share a data volume (and so a spill file)"


def test_secrets_come_from_the_env_file(base: dict):
    env = base["services"]["bot-1"]["environment"]
    # Values from .env.example, interpolated: nothing secret is in the YAML.
    assert env["CLAWDBOT_API_KEYS"].startswith("replace-with")
    assert env["DATABASE_URL"] == "postgres://clawdbot:replace-with-openssl-rand-hex-32@db:5432/clawdbot"
    assert env["REDIS_URL"].startswith("redis://:replace-with-openssl-rand-hex-32@redis:6379/")
    text = BASE.read_text() + MYSQL.read_text()
    assert "replace-with" not in text
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--error-unmatch", "examples/compose/.env"],
                             capture_output=True)
    assert tracked.returncode != 0, "examples/compose/.env is committed"


def test_missing_secrets_stop_compose(tmp_path: Path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    r = compose_config([BASE], empty)
    assert r.returncode != 0
    assert "in .env" in r.stderr, r.stderr


def test_without_a_model_endpoint_the_replicas_answer_with_the_local_model(tmp_path: Path):
    env_file = tmp_path / "local.env"
    lines = ENV_EXAMPLE.read_text().splitlines(keepends=True)
    env_file.write_text("".join(line for line in lines if not line.startswith("MODEL_ENDPOINT=")))
    r = compose_config([BASE], env_file)
    assert r.returncode == 0, r.stderr
    replica = yaml.safe_load(r.stdout)["services"]["bot-1"]["environment"]
    assert replica["MODEL_ENDPOINT"] == "", replica
    # The real binary with that environment: the empty endpoint counts as
    # unset (model.backend auto), and from the checkout, where the default
    # model file is (as it is in the image's working directory), auto picks it.
    bot = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", fail)
    env = {k: str(v) for k, v in replica.items()} | {"PATH": "/usr/bin:/bin"}
    check = subprocess.run([bot, "check-config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "without a model" not in check.stdout, check.stdout


def test_backing_services_have_healthchecks_restarts_and_volumes(base: dict):
    for name in ("redis", "db", "nginx"):
        assert base["services"][name]["restart"] == "unless-stopped"
    for name in ("redis", "db"):
        s = base["services"][name]
        assert s["healthcheck"]["test"][0] == "CMD"
        named = [v.split(":")[0] for v in s["volumes"]]
        assert named and all(n in base["volumes"] for n in named), s["volumes"]
    assert base["services"]["db"]["image"].startswith("postgres:")
    assert base["services"]["redis"]["image"].startswith("redis:")


def test_nginx_uses_the_shipped_config(base: dict):
    s = base["services"]["nginx"]
    confs = [v for v in s["volumes"] if v.split(":")[1] == "/etc/nginx/conf.d/default.conf"]
    assert confs and Path(confs[0].split(":")[0]) == REPO / "examples" / "nginx" / "clawdbot.conf", confs
    assert {p["target"] for p in s["ports"]} == {80, 443}
    assert s["depends_on"] == {n: {"condition": "service_healthy"} for n in REPLICAS}
    # The trusted proxy the replicas believe is nginx's fixed address.
    ip = s["networks"]["clawdbot"]["ipv4_address"]
    for name in REPLICAS:
        assert base["services"][name]["environment"]["CLAWDBOT_SERVER__TRUSTED_PROXIES"] == f"{ip}/32"
    # The upstream names in the nginx file are these services.
    conf = (REPO / "examples" / "nginx" / "clawdbot.conf").read_text()
    for name in REPLICAS:
        assert f"server {name}:18789" in conf


def test_mysql_variant_swaps_the_database(mysql: dict):
    db = mysql["services"]["db"]
    assert db["image"].startswith("mariadb:")
    assert db["healthcheck"]["test"][:2] == ["CMD", "healthcheck.sh"]
    assert any(v.endswith(":/var/lib/mysql:rw") or v.endswith(":/var/lib/mysql") for v in db["volumes"])
    for name in REPLICAS:
        s = mysql["services"][name]
        assert s["environment"]["DATABASE_URL"].startswith("mysql://clawdbot:")
        assert s["environment"]["DATABASE_URL"].endswith("@db:3306/clawdbot")
        assert s["depends_on"]["db"] == {"condition": "service_healthy"}
        # The rest of the replica is the base file's.
        assert s["read_only"] is True and s["healthcheck"]["test"] == HEALTHCHECK


# (text, replacement, what the parser's message must name)
BROKEN = {
    "a misspelt condition": ("condition: service_healthy", "condition: service_healty", "service_healty"),
    "a wrong type": ("read_only: true", "read_only: sometimes", "read_only"),
    "an unknown key": ("  restart: unless-stopped\n", "  restart: unless-stopped\n  restart_policy: always\n",
                       "restart_policy"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_parser_rejects_a_broken_file(tmp_path: Path, case: str):
    """The validator can fail: the shipped file with one mistake is refused."""
    old, new, named = BROKEN[case]
    text = BASE.read_text()
    assert old in text, f"{old!r} not in {BASE}"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    r = compose_config([broken], ENV_EXAMPLE)
    assert r.returncode != 0, f"docker-compose accepted a file with {case}:\n{r.stdout[:2000]}"
    assert named in r.stderr, r.stderr
