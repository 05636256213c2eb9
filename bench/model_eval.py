"""Chooses the default local model: runs bench/model_eval.json's questions
through bot-runtime on each candidate GGUF file and scores the answers by
the rule written in that file. Stdlib only.

    python3 bench/model_eval.py BOT_RUNTIME_BIN MODEL.gguf [MODEL.gguf ...]

Prints a Markdown section (per-model score, per-language scores, decode
speed, and every answer) for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def wait_ready(base: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"bot-runtime exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bot-runtime did not become ready")


def score(answer: str, groups: list[list[str]]) -> int:
    low = answer.lower()
    return int(all(any(k.lower() in low for k in group) for group in groups))


def evaluate(binary: str, model: Path, spec: dict) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAWDBOT_", "MODEL_"))}
    env.update(
        MODEL_BACKEND="local",
        MODEL_PATH=str(model),
        CLAWDBOT_LISTEN=f"127.0.0.1:{port}",
        CLAWDBOT_SERVER__DATA_DIR=tempfile.mkdtemp(prefix="model-eval-"),
        CLAWDBOT_LOGGING__LEVEL="warn",
    )
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        name = json.load(urllib.request.urlopen(base + "/v1/models"))["data"][0]["id"]
        rows, tokens, secs = [], 0, 0.0
        for item in spec["questions"]:
            started = time.monotonic()
            done = post(base + "/v1/chat/completions", {
                "model": name,
                "temperature": 0,
                "max_tokens": 128,
                "messages": [
                    {"role": "system", "content": spec["system_prompt"]},
                    {"role": "user", "content": item["q"]},
                ],
            })
            secs += time.monotonic() - started
            tokens += done["usage"]["completion_tokens"]
            answer = done["choices"][0]["message"]["content"]
            rows.append({**item, "answer": answer, "ok": score(answer, item["keywords"])})
        return {"model": model.name, "rows": rows, "tok_s": tokens / secs if secs else 0.0}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    spec = json.loads((HERE / "model_eval.json").read_text())
    results = [evaluate(sys.argv[1], Path(m), spec) for m in sys.argv[2:]]
    out = ["| model | score (of %d) | English | Chinese | tokens/s (whole answers, 1 stream) |" % len(spec["questions"]),
           "|---|---|---|---|---|"]
    for r in results:
        by = lambda lang: sum(x["ok"] for x in r["rows"] if x["lang"] == lang)  # noqa: E731
        total = lambda lang: sum(1 for x in r["rows"] if x["lang"] == lang)  # noqa: E731
        out.append(f"| {r['model']} | {sum(x['ok'] for x in r['rows'])} | {by('en')}/{total('en')} | "
                   f"{by('zh')}/{total('zh')} | {r['tok_s']:.0f} |")
    out.append("")
    out.append("Answers (first 80 characters; ✓ scored):")
    out.append("")
    out.append("| question | " + " | ".join(r["model"] for r in results) + " |")
    out.append("|---|" + "---|" * len(results))
    for i, item in enumerate(spec["questions"]):
        cells = []
        for r in results:
            row = r["rows"][i]
            text = " ".join(row["answer"].split())[:80].replace("|", "\\|")
            cells.append(("✓ " if row["ok"] else "✗ ") + text)
        out.append(f"| {item['q']} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
