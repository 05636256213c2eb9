"""examples/systemd/bot-runtime.service: `systemd-analyze verify` accepts it
and `systemd-analyze security --offline=true` rates its exposure low.

Both read a copy whose binary path points at BOT_RUNTIME_BIN (verify
checks that ExecStart exists); nothing is started."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, fail
import pyharness as ph

UNIT = REPO / "examples" / "systemd" / "bot-runtime.service"
INSTALLED_PATH = "/usr/local/bin/bot-runtime"
# systemd's scale: 0 (locked down) .. 10 (unprotected); below 2 is "OK". The
# unit scores 1.2 with systemd 252; the margin absorbs newer systemd versions
# that weigh more settings.
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def unit_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("systemd-analyze"):
        fail("systemd-analyze is not installed (Debian package systemd)")
    binary = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", fail)
    text = UNIT.read_text()
    execs = [l for l in text.splitlines() if l.startswith(("ExecStart=", "ExecStartPre="))]
    assert len(execs) == 2 and all(f"={INSTALLED_PATH} " in l for l in execs), execs
    d = tmp_path_factory.mktemp("systemd")
    copy = d / "bot-runtime.service"
    copy.write_text(text.replace(INSTALLED_PATH, binary))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def verify_problems(unit: Path) -> list[str]:
    """What `systemd-analyze verify` objects to: it exits 0 for settings it
    ignores, so the lines naming the file count too."""
    r = analyze("verify", str(unit))
    problems = [l for l in r.stderr.splitlines() if unit.name in l]
    if r.returncode != 0:
        problems.append(f"exit {r.returncode}: {r.stderr.strip()}")
    return problems


def test_unit_verifies(unit_copy: Path):
    assert verify_problems(unit_copy) == []


@pytest.mark.parametrize("old,new", [
    ("ProtectSystem=strict", "ProtectSystem=strictest"),
    ("RestrictAddressFamilies=AF_INET", "RestrictAddressFamilies=AF_INTERNET"),
    ("ExecStart=", "ExecStart=/nonexistent/bot-runtime #"),
])
def test_verify_can_fail(unit_copy: Path, tmp_path: Path, old: str, new: str):
    bad = tmp_path / "bot-runtime.service"
    text = unit_copy.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    assert verify_problems(bad), f"verify accepted {new!r}"


def exposure(unit: Path) -> float:
    r = analyze("security", "--offline=true", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    if not m:
        fail(f"no exposure level in systemd-analyze security output:\n{r.stdout}\n{r.stderr}")
    return float(m.group(1))


def test_exposure_is_low(unit_copy: Path):
    score = exposure(unit_copy)
    print(f"\nsystemd-analyze security exposure: {score}")
    assert score < MAX_EXPOSURE, f"exposure {score} >= {MAX_EXPOSURE}"


def test_exposure_check_can_fail(unit_copy: Path, tmp_path: Path):
    """Control: the unit stripped of its sandbox scores far above the bar."""
    keep = ("[", "ExecStart", "Description", "Type=", "WantedBy")
    bare = "\n".join(l for l in unit_copy.read_text().splitlines() if l.startswith(keep))
    plain = tmp_path / "bot-runtime.service"
    plain.write_text(bare + "\n")
    assert exposure(plain) >= MAX_EXPOSURE


def test_hardening_settings_present():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    expected = {
        "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "ProtectHome": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
        "StateDirectory": "clawdbot", "LogsDirectory": "clawdbot", "Restart": "on-failure",
        "ReadWritePaths": "/var/lib/clawdbot", "EnvironmentFile": "/etc/clawdbot/bot-runtime.env",
    }
    for k, v in expected.items():
        assert settings.get(k, [None])[0] == v, f"{k}={settings.get(k)}"
    assert "@system-service" in settings["SystemCallFilter"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


# --- MemoryDenyWriteExecute=yes does not break the local model ---------------

# PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN: the kernel mechanism behind
# MemoryDenyWriteExecute=yes on kernels that have it (6.3+); it survives
# execve, so the runtime started below lives under it.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"
    "    sys.exit(f'PR_SET_MDWE failed: errno {ctypes.get_errno()}')\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
LOCAL_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_mdwe_wrapper_refuses_writable_executable_memory():
    """Control: under the wrapper a W+X mapping is refused, so the test
    below would catch a runtime that needs one."""
    probe = "import mmap\nmmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    py = shutil.which("python3") or "/usr/bin/python3"
    r = subprocess.run([py, "-c", MDWE_EXEC, py, "-c", probe], capture_output=True, text=True, timeout=30)
    if "PR_SET_MDWE failed" in r.stderr:
        fail(f"this kernel has no PR_SET_MDWE (needs Linux 6.3+): {r.stderr}")
    assert r.returncode != 0 and "PermissionError" in r.stderr, (r.returncode, r.stderr)


def test_local_model_answers_without_writable_executable_memory(tmp_path: Path):
    import json
    import sys
    import urllib.request

    binary = ph.require_binary("BOT_RUNTIME_BIN", "bot-runtime", "target/debug/bot-runtime", fail)
    if not LOCAL_MODEL.is_file():
        fail(f"{LOCAL_MODEL} is missing: run scripts/fetch-models.sh (make test does)")
    port = ph.free_port()
    env = ph.runtime_env()
    env.update(
        CLAWDBOT_LISTEN=f"127.0.0.1:{port}", MODEL_BACKEND="local", MODEL_PATH=str(LOCAL_MODEL),
        CLAWDBOT_MODEL__LOCAL__PARALLEL="1", CLAWDBOT_MODEL__LOCAL__THREADS="2",
    )
    svc = ph.start_until_ready(
        "bot-runtime-mdwe", [sys.executable, "-c", MDWE_EXEC, binary], tmp_path, port, env, fail
    )
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as resp:
            model = json.loads(resp.read())["data"][0]["id"]
        body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["content"], answer
        assert answer["usage"]["completion_tokens"] > 0, answer
    finally:
        ph.stop(svc.proc)
