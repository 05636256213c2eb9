#!/usr/bin/env bash
# Regenerates operator/src/crd/monitoring/ (typed ServiceMonitor and
# PrometheusRule) from the Prometheus Operator CRDs kept as test data in
# tests/operator/crds/. Run it after replacing those CRD files with a newer
# release's; not part of `make test` (the generated files are committed).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KOPIUM_VERSION=0.24.1
if ! kopium --version 2>/dev/null | grep -q " $KOPIUM_VERSION\$"; then
    cargo install kopium --version "$KOPIUM_VERSION" --locked
fi
OUT=operator/src/crd/monitoring
for pair in servicemonitors:servicemonitor prometheusrules:prometheusrule; do
    crd=${pair%%:*} file=${pair##*:}
    kopium -f "tests/operator/crds/monitoring.coreos.com_$crd.yaml" \
        --schema=disabled --derive=Default --derive=PartialEq --smart-derive-elision > "$OUT/$file.rs"
    rustfmt --edition 2024 "$OUT/$file.rs"
done
echo "regenerated $OUT/servicemonitor.rs and $OUT/prometheusrule.rs" >&2
