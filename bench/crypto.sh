#!/usr/bin/env bash
# Only the "Encryption at rest" section of docs/benchmarks.md: builds the
# release example, runs bench/crypto_bench.py and replaces that section in
# place (appends it when missing). About ten seconds after the build.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cargo build --release -p bot-runtime --examples
python3 bench/crypto_bench.py "$TARGET_DIR/release" "$OUT_MD"
echo "[bench] wrote the encryption section of $OUT_MD" >&2
