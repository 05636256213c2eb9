"""Fixtures for the single-host deployment tests (examples/compose, nginx, systemd).

The nginx tests run the shipped examples/nginx/clawdbot.conf (templated:
ports, upstream addresses, certificate and log paths) in front of two real
bot-runtime processes (BOT_RUNTIME_BIN) that share the machine's Redis (under
a key prefix of their own) and a PostgreSQL database created for the session
and dropped after it, with mock-upstream (MOCK_UPSTREAM_BIN) as the model.

Binaries and services are required: a missing one fails (never skips).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent))
import pyharness as ph  # noqa: E402
from attach_logs import AttachLogs  # noqa: E402
from pyharness import Service  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "examples" / "nginx" / "clawdbot.conf"

# Several words: a stream has one content chunk per word.
REPLY = "Replicas share sessions through Redis and every token streams through nginx right away."
MODEL = "mock-model"
API_KEY = "deploy-user-key"
ADMIN_KEY = "deploy-admin-key"
CHUNK_DELAY_MS = 40
# The certificate's name; the client checks it (SNI and verification).
SERVER_NAME = "chat.example.com"
PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def _run(cmd: list[str], what: str, **kw) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    except FileNotFoundError:
        fail(f"{what}: {cmd[0]} is not installed")
    if r.returncode != 0:
        fail(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def psql(db: str, sql: str) -> str:
    return _run([*PG, "-d", db, "-c", sql], f"psql on {db}")


def _require_services() -> None:
    for cmd, what in (
        ([*PG, "-d", "postgres", "-c", "SELECT 1"], "PostgreSQL on 127.0.0.1:5432"),
        (["redis-cli", "-h", "127.0.0.1", "-p", "6379", "PING"], "Redis on 127.0.0.1:6379"),
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        if r.returncode != 0 or r.stdout.strip() not in ("1", "PONG"):
            fail(f"{what} does not answer (start it with scripts/ensure-services.sh): {r.stdout}{r.stderr}")


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not path:
        fail("nginx is not installed (Debian package nginx)")
    return path


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for SERVER_NAME and 127.0.0.1."""
    cert, key = d / "fullchain.pem", d / "privkey.pem"
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}",
            "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        "openssl req",
    )
    return cert, key


def _sub(text: str, pattern: str, repl: str, count: int) -> str:
    """re.subn that insists on `count` matches, so a change to the shipped
    file breaks the template loudly instead of testing something else."""
    out, n = re.subn(pattern, repl, text, flags=re.M)
    if n != count:
        fail(f"templating {NGINX_CONF}: expected {count} match(es) of {pattern!r}, found {n}")
    return out


def render_nginx_site(
    backends: list[int], http_port: int, https_port: int, cert: Path, key: Path, logdir: Path
) -> str:
    """examples/nginx/clawdbot.conf with this machine's ports and paths."""
    text = NGINX_CONF.read_text()
    servers = iter(backends)
    text = _sub(text, r"^(\s*server\s+)bot-\d+:18789\b", lambda m: f"{m.group(1)}127.0.0.1:{next(servers)}", 2)
    text = _sub(text, r"^(\s*listen\s+)80;", rf"\g<1>127.0.0.1:{http_port};", 1)
    text = _sub(text, r"^(\s*listen\s+)443 ssl;", rf"\g<1>127.0.0.1:{https_port} ssl;", 1)
    text = _sub(text, r"/etc/nginx/certs/fullchain\.pem", str(cert), 1)
    text = _sub(text, r"/etc/nginx/certs/privkey\.pem", str(key), 1)
    text = _sub(text, r"/var/log/nginx/access\.log", str(logdir / "access.log"), 1)
    text = _sub(text, r"/var/www/certbot", str(logdir / "acme"), 1)
    return text


def nginx_main_conf(prefix: Path, site: Path, extra_http: str = "") -> str:
    """The main file around the site file, as /etc/nginx/nginx.conf would be:
    only paths this test owns."""
    # Workers run as root when the tests do, so they can use the 0700 temp dirs.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {k}_temp_path {prefix / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {prefix / 'default-access.log'};\n{temp}\n{extra_http}"
        f"    include {site};\n}}\n"
    )


@dataclass
class Nginx:
    service: Service
    http_port: int
    https_port: int
    access_log: Path
    ca: Path

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def upstream_of(self, request_id: str, timeout: float = 3.0) -> list[str]:
        """The upstream address(es) nginx logged for one request id (a retry
        logs several, comma separated)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log.read_text(errors="replace").splitlines():
                if f"rid={request_id}" in line:
                    m = re.search(r"upstream=(\S+(?:, \S+)*)", line)
                    return m.group(1).split(", ") if m else []
            if time.monotonic() >= deadline:
                fail(f"no access-log line for rid={request_id} in {self.access_log}")
            time.sleep(0.05)


def start_nginx(workdir: Path, site_text: str, ca: Path, http_port: int, https_port: int,
                extra_http: str = "") -> Nginx:
    binary = nginx_binary()
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "acme"):
        (workdir / d).mkdir(exist_ok=True)
    site = workdir / "clawdbot.conf"
    site.write_text(site_text)
    main = workdir / "nginx.conf"
    main.write_text(nginx_main_conf(workdir, site, extra_http))
    check = subprocess.run([binary, "-t", "-p", str(workdir), "-c", str(main)], capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"nginx -t rejects the templated config:\n{check.stderr}\n--- {site}:\n{site_text}")
    log = workdir / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(main), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    service = Service("nginx", proc, log)
    deadline = time.monotonic() + 10
    import socket

    while True:
        if proc.poll() is not None:
            fail(f"nginx exited (status {proc.returncode})\n{ph.tail(log)}\n{ph.tail(workdir / 'error.log')}")
        try:
            socket.create_connection(("127.0.0.1", https_port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() >= deadline:
                ph.stop(proc)
                fail(f"nginx is not listening on {https_port}\n{ph.tail(workdir / 'error.log')}")
            time.sleep(0.05)
    return Nginx(service, http_port, https_port, workdir / "access.log", ca)


@dataclass
class Replica:
    name: str
    port: int
    metrics_port: int
    service: Service


@dataclass
class Cluster:
    replicas: list[Replica]
    nginx: Nginx
    database: str
    key_prefix: str
    mock_addr: str
    workdir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def replica_by_addr(self, addr: str) -> Replica:
        for r in self.replicas:
            if addr == f"127.0.0.1:{r.port}":
                return r
        fail(f"{addr} is not a replica's address")


_SERVICES: dict[str, Service] = {}


def start_replica(name: str, binary: str, workdir: Path, settings: dict[str, str]) -> Replica:
    port, metrics_port = ph.free_port(), ph.free_port()
    env = ph.runtime_env()
    env.update(settings)
    env.update(
        CLAWDBOT_LISTEN=f"127.0.0.1:{port}",
        CLAWDBOT_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    service = ph.start_until_ready(name, [binary], workdir, port, env, fail)
    _SERVICES[name] = service
    return Replica(name, port, metrics_port, service)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    bot = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", fail)
    mock = ph.require_binary("MOCK_UPSTREAM_BIN", "mock-upstream", "target/debug/mock-upstream", fail)
    _require_services()
    root = tmp_path_factory.mktemp("deploy")
    tag = uuid.uuid4().hex[:12]
    database = f"clawdbot_deploy_{tag}"
    key_prefix = f"clawdbot-deploytest-{tag}:"
    started: list[Service] = []
    psql("postgres", f'CREATE DATABASE "{database}"')
    try:
        mock_service, mock_addr = ph.start_mock_upstream(
            mock, ["--reply", REPLY, "--model", MODEL, "--chunk-delay-ms", str(CHUNK_DELAY_MS)],
            root, fail,
        )
        started.append(mock_service)
        _SERVICES["mock-upstream"] = mock_service
        settings = {
            "MODEL_ENDPOINT": f"http://{mock_addr}/v1",
            "MODEL_NAME": MODEL,
            "CLAWDBOT_API_KEYS": f"{API_KEY},{ADMIN_KEY}:admin",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CLAWDBOT_REDIS__KEY_PREFIX": key_prefix,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            # nginx is the trusted proxy, as in the compose example.
            "CLAWDBOT_SERVER__TRUSTED_PROXIES": "127.0.0.1/32",
            # Every test client is 127.0.0.1, one rate-limit bucket: the
            # failover load would otherwise be throttled, not failed over.
            "CLAWDBOT_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND": "0",
            # Short, so a stopping replica is gone within the test's load.
            "CLAWDBOT_SERVER__DRAIN_DEADLINE_SECS": "5",
            "CLAWDBOT_LOGGING__FORMAT": "text",
        }
        replicas = []
        for name in ("replica-a", "replica-b"):
            r = start_replica(name, bot, root / name, settings)
            started.append(r.service)
            replicas.append(r)
        ngx_dir = root / "nginx"
        ngx_dir.mkdir()
        cert, key = make_cert(ngx_dir)
        http_port, https_port = ph.free_port(), ph.free_port()
        site = render_nginx_site([r.port for r in replicas], http_port, https_port, cert, key, ngx_dir)
        ngx = start_nginx(ngx_dir, site, cert, http_port, https_port)
        started.append(ngx.service)
        _SERVICES["nginx"] = ngx.service
        yield Cluster(replicas, ngx, database, key_prefix, mock_addr, root)
    finally:
        for s in reversed(started):
            ph.stop(s.proc)
        for name in ("mock-upstream", "replica-a", "replica-b", "nginx"):
            _SERVICES.pop(name, None)
        subprocess.run([*PG, "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
                       capture_output=True, timeout=60)
        _delete_redis_prefix(key_prefix)


def _delete_redis_prefix(prefix: str) -> None:
    scan = subprocess.run(["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern", f"{prefix}*"],
                          capture_output=True, text=True, timeout=30)
    keys = scan.stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "DEL", *keys[i:i + 500]], capture_output=True, timeout=30)


# --- attach the services' logs to failing tests ------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(AttachLogs(_SERVICES), "attach-logs")
