#!/usr/bin/env bash
# The operator section of docs/benchmarks.md alone: a burst of 1000
# ClawdBots against the API server emulator, plain and with managed Redis +
# PostgreSQL, each followed by 60 idle seconds; rewrites that section in
# place. Bounded in time (the benchmark gives up after 15 min per burst).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$ROOT/scripts/install-test-tools.sh" >/dev/null
cargo build --release -p clawdbot-operator
for kind in plain managed; do
    echo "operator bench: 1000 ClawdBots, $kind" >&2
    python3 "$ROOT/bench/operator_bench.py" "$TARGET_DIR/release/clawdbot-operator" \
        "$ROOT/.cache/operator-venv/bin/python" "$WORK/operator-$kind.json" 1000 60 "$kind" >/dev/null
done
python3 "$ROOT/bench/operator_bench.py" --update "$OUT_MD" "$WORK/operator-plain.json" "$WORK/operator-managed.json"
echo "operator bench: updated $OUT_MD" >&2
