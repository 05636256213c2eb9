# Sourced by the section scripts (operator.sh, webhooks.sh, local.sh): the
# checkout root as the working directory, the cargo target directory as an
# absolute path, and the report to update.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT_MD=${BENCH_OUT:-docs/benchmarks.md}
