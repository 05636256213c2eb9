#!/usr/bin/env bash
# Only the "Local model and knowledge base" section of docs/benchmarks.md:
# fetches the model files (the evaluation's candidates too), builds the
# release binaries, runs bench/local_model_bench.py and replaces that
# section in place (appends it when missing).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

scripts/fetch-models.sh --eval
cargo build --release -p bot-runtime -p clawdbot-bench --bins --examples
RESULT=$(mktemp "${TMPDIR:-/tmp}/clawdbot-local.XXXXXX.json")
trap 'rm -f "$RESULT"' EXIT
python3 bench/local_model_bench.py "$TARGET_DIR/release" "$RESULT" >/dev/null
python3 bench/local_model_bench.py --update "$RESULT" "$OUT_MD"
echo "[bench] wrote the local model section of $OUT_MD" >&2
