#!/usr/bin/env bash
# Only the "Encryption at rest" section of docs/benchmarks.md: builds the
# release binaries, runs bench/crypto_bench.py (cipher throughput, then
# the chat path with encryption off and on: about 3 minutes) and replaces
# that section in place (appends it when missing).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cargo build --release -p bot-runtime -p clawdbot-bench --bins --examples
python3 bench/crypto_bench.py "$TARGET_DIR/release" "$OUT_MD"
echo "[bench] wrote the encryption section of $OUT_MD" >&2
