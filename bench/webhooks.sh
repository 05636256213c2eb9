#!/usr/bin/env bash
# Only the "IM webhook deliveries" section of docs/benchmarks.md: builds the
# release binaries, runs bench/webhook_bench.py, and replaces that section in
# place (appends it when missing); the other sections are left as they are.
#
# Env: BENCH_SECS=10 (fixed-rate window; closed loop uses half),
#      BENCH_OUT=docs/benchmarks.md, and webhook_bench.py's own knobs
#      (BENCH_WEBHOOK_RATE, BENCH_WEBHOOK_REPEATS, BENCH_WEBHOOK_REDIS,
#      BENCH_WEBHOOK_REPLIES_PER_SECOND).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cargo build --release -p bot-runtime -p clawdbot-bench
RESULT=$(mktemp "${TMPDIR:-/tmp}/clawdbot-webhooks.XXXXXX.json")
trap 'rm -f "$RESULT"' EXIT
python3 bench/webhook_bench.py "$TARGET_DIR/release" "$RESULT" "${BENCH_SECS:-10}" >/dev/null
python3 bench/webhook_bench.py --update "$RESULT" "$OUT_MD"
echo "[bench] wrote the IM webhook section of $OUT_MD" >&2
