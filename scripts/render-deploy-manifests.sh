#!/usr/bin/env bash
# Writes deploy/clawdbot-operator.yaml (the plain-manifest install) as the
# operator chart's output with default values plus the Namespace, so the
# plain manifests and the chart never disagree.
#
#   scripts/render-deploy-manifests.sh [OUT]   (default deploy/clawdbot-operator.yaml)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HELM=${HELM:-.cache/tools/helm}
OUT=${1:-deploy/clawdbot-operator.yaml}
[[ -x $HELM ]] || { echo "helm not found at $HELM: run scripts/install-test-tools.sh" >&2; exit 1; }
{
    cat <<'HEADER'
# clawdbot-operator, installed with plain manifests. GENERATED from
# charts/clawdbot-operator by `make deploy-manifests` (default values, plus
# the Namespace); `make test` fails when it drifts. Edit the chart instead.
#
#   kubectl apply --server-side -f deploy/clawdbot-operator.yaml
#
# The CRD is included (with helm.sh/resource-policy: keep, which only Helm
# reads). Two replicas: only the holder of the Lease reconciles; the other
# takes over within about 15 s. Needs Kubernetes 1.30 or newer. RBAC:
# docs/rbac.md. Other installs (Helm, namespace-scoped): docs/install.md.
HEADER
    "$HELM" template clawdbot-operator charts/clawdbot-operator \
        --namespace clawdbot-system --set namespace.create=true
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
