#!/usr/bin/env bash
# Offline checks of the example manifests (examples/*.yaml and
# examples/gitops/bots/*.yaml holding a ClawdBot):
#
#   1. `clawdbot-operator render` of each example's ClawdBot and of each
#      edge-case fixture (operator/tests/fixtures), and the other documents of
#      the examples (their Secrets), pass `kubernetes-validate --strict`
#      against Kubernetes 1.35.0 (unknown fields, wrong types and unknown kinds
#      are errors); rendered kinds of other operators (CloudNativePG Cluster,
#      ServiceMonitor, PrometheusRule) against their CRD schemas (tests/operator/crds/);
#   2. every ClawdBot document matches the CRD's openAPIV3Schema
#      (crds/clawdbot.io_clawdbots.yaml), with unknown fields rejected
#      (tests/operator/check_crd_schema.py);
#   3. a self-test proves both checks reject a broken object.
#
# Usage: tests/operator/validate_manifests.sh
#   OPERATOR_BIN  the operator binary (default target/debug/clawdbot-operator;
#                 build it with `cargo build -p clawdbot-operator`)
#
# Python tools come from the venv .cache/operator-venv (tests/operator/requirements.txt:
# kubernetes-validate==1.37.0, jsonschema, PyYAML); it is created when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

K8S_VERSION=1.35.0
VENV=.cache/operator-venv
REQ=tests/operator/requirements.txt
CRD=crds/clawdbot.io_clawdbots.yaml
SCHEMA_CHECK=tests/operator/check_crd_schema.py
CNPG_CRD=tests/operator/crds/postgresql.cnpg.io_clusters.yaml
CUSTOM_CRDS=(tests/operator/crds/*.yaml)
OPERATOR_BIN=${OPERATOR_BIN:-target/debug/clawdbot-operator}

log() { printf 'validate_manifests: %s\n' "$*"; }
die() { printf 'validate_manifests: error: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------
tools_ok() {
    [[ -x $VENV/bin/kubernetes-validate ]] \
        && "$VENV/bin/python" -c 'import jsonschema, yaml' >/dev/null 2>&1
}
if ! tools_ok; then
    [[ -f $REQ ]] || die "$REQ is missing (it pins kubernetes-validate and jsonschema)"
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    log "creating $VENV from $REQ"
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
    tools_ok || die "$VENV lacks kubernetes-validate or jsonschema after installing $REQ"
fi
KV_VERSION=$("$VENV/bin/kubernetes-validate" --version 2>&1 | tr -d '[:space:]')
want_kv=$(sed -n 's/^kubernetes-validate==//p' "$REQ" 2>/dev/null | tr -d '[:space:]')
if [[ -n $want_kv && $KV_VERSION != *"$want_kv"* ]]; then
    die "kubernetes-validate is $KV_VERSION, $REQ pins $want_kv: reinstall $VENV"
fi

[[ -x $OPERATOR_BIN ]] || die "operator binary not found at $OPERATOR_BIN: cargo build -p clawdbot-operator, or set OPERATOR_BIN"
[[ -f $CRD ]] || die "$CRD is missing"

# "GROUP/VERSION/Kind" of a CRD's storage version.
crd_kind() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
crd = yaml.safe_load(open(sys.argv[1], encoding='utf-8'))
v = next(v['name'] for v in crd['spec']['versions'] if v.get('storage'))
print(f"{crd['spec']['group']}/{v}/{crd['spec']['names']['kind']}")
PY
}
CUSTOM_KINDS=$(for c in "${CUSTOM_CRDS[@]}"; do crd_kind "$c"; done)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=0
fail() { printf 'FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }

# Splits a manifest into its ClawdBot document (OUT.clawdbot.yaml, exactly one
# required) and the rest (OUT.others.yaml, possibly empty), since `render -f`
# reads a single document.
split_manifest() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, yaml
src, out = sys.argv[1], sys.argv[2]
with open(src, encoding='utf-8') as f:
    docs = [d for d in yaml.safe_load_all(f) if d is not None]
bots = [d for d in docs if isinstance(d, dict) and d.get('apiVersion') == 'clawdbot.io/v1alpha1' and d.get('kind') == 'ClawdBot']
others = [d for d in docs if not any(d is b for b in bots)]
if len(bots) != 1:
    sys.exit(f'{src}: expected exactly one ClawdBot document, found {len(bots)}')
with open(out + '.clawdbot.yaml', 'w', encoding='utf-8') as f:
    yaml.safe_dump(bots[0], f, sort_keys=False)
with open(out + '.others.yaml', 'w', encoding='utf-8') as f:
    yaml.safe_dump_all(others, f, sort_keys=False)
PY
}

# kubernetes-validate exits 0 on an unknown kind (a WARN line), so anything
# but "INFO ... passed" lines counts as a failure.
kube_validate() {
    local label=$1 file=$2 out rc=0
    out=$("$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" 2>&1) || rc=$?
    local bad
    bad=$(grep -v -E '^INFO .* passed for resource ' <<<"$out" || true)
    if [[ $rc -ne 0 || -n $bad ]]; then
        fail "$label: kubernetes-validate --strict -k $K8S_VERSION (exit $rc):"
        printf '%s\n' "${bad:-$out}" | sed 's/^/    /' >&2
        return 1
    fi
    local n
    n=$(grep -c -E '^INFO .* passed' <<<"$out" || true)
    log "ok $label: $n object(s) valid for Kubernetes $K8S_VERSION"
}

# Rendered children: built-in kinds through kubernetes-validate; the other
# operators' kinds (CloudNativePG's Cluster, the Prometheus Operator's
# ServiceMonitor and PrometheusRule) against their own CRD schemas in
# tests/operator/crds/. A kind with no CRD there fails.
check_rendered() {
    local label=$1 base=$2 crd kind
    if ! "$VENV/bin/python" - "$base.rendered.yaml" "$base" $CUSTOM_KINDS <<'PY'
import sys, yaml
src, out, known = sys.argv[1], sys.argv[2], set(sys.argv[3:])
with open(src, encoding='utf-8') as f:
    docs = [d for d in yaml.safe_load_all(f) if d is not None]
def group(d):
    av = d.get('apiVersion', '')
    return av.split('/')[0] if '/' in av else ''
builtin_groups = ('', 'apps', 'batch', 'policy', 'autoscaling')
custom = [d for d in docs if group(d) not in builtin_groups and not group(d).endswith('k8s.io')]
rest = [d for d in docs if not any(d is c for c in custom)]
unknown = sorted({f"{d.get('apiVersion')}/{d.get('kind')}" for d in custom} - known)
if unknown:
    sys.exit(f'no CRD in tests/operator/crds/ for {", ".join(unknown)}')
with open(out + '.builtin.yaml', 'w', encoding='utf-8') as f:
    yaml.safe_dump_all(rest, f, sort_keys=False)
with open(out + '.custom.yaml', 'w', encoding='utf-8') as f:
    yaml.safe_dump_all(custom, f, sort_keys=False)
PY
    then
        fail "$label: rendered children"
        return
    fi
    kube_validate "$label (rendered children)" "$base.builtin.yaml" || true
    for crd in "${CUSTOM_CRDS[@]}"; do
        kind=$(crd_kind "$crd")
        grep -q "^kind: ${kind##*/}\$" "$base.custom.yaml" || continue
        if out=$("$VENV/bin/python" "$SCHEMA_CHECK" "$crd" "$base.custom.yaml" 2>&1); then
            log "ok $label (rendered ${kind##*/} matches $(basename "$crd"))"
        else
            fail "$label: the rendered ${kind##*/} does not match $crd:"
            sed 's/^/    /' <<<"$out" >&2
        fi
    done
}

# --- 1. rendered children and example Secrets ------------------------------------
examples=()
for f in examples/*.yaml examples/gitops/bots/*.yaml; do
    grep -q '^kind: ClawdBot' "$f" && examples+=("$f")
done
(( ${#examples[@]} > 0 )) || die "no ClawdBot examples in examples/"

for f in "${examples[@]}"; do
    name=$(basename "$f" .yaml)
    if ! split_manifest "$f" "$WORK/$name" 2>"$WORK/$name.split.err"; then
        fail "$f: $(cat "$WORK/$name.split.err")"
        continue
    fi
    if ! "$OPERATOR_BIN" render -f "$WORK/$name.clawdbot.yaml" >"$WORK/$name.rendered.yaml" 2>"$WORK/$name.render.err"; then
        fail "$f: clawdbot-operator render failed:"
        sed 's/^/    /' "$WORK/$name.render.err" >&2
        continue
    fi
    check_rendered "$f" "$WORK/$name"
    if [[ -s $WORK/$name.others.yaml ]] && grep -q 'kind:' "$WORK/$name.others.yaml"; then
        kube_validate "$f (other documents)" "$WORK/$name.others.yaml" || true
    fi
done

# Edge-case fixtures, checked the same way.
for f in operator/tests/fixtures/*.yaml; do
    name=fixture-$(basename "$f" .yaml)
    if ! "$OPERATOR_BIN" render -f "$f" >"$WORK/$name.rendered.yaml" 2>"$WORK/$name.render.err"; then
        fail "$f: clawdbot-operator render failed:"
        sed 's/^/    /' "$WORK/$name.render.err" >&2
        continue
    fi
    check_rendered "$f" "$WORK/$name"
done

# The operator's own install manifests and the CRD itself.
kube_validate "deploy/clawdbot-operator.yaml" deploy/clawdbot-operator.yaml || true
kube_validate "$CRD" "$CRD" || true

# --- 2. ClawdBot documents against the CRD schema --------------------------------
if out=$("$VENV/bin/python" "$SCHEMA_CHECK" "$CRD" "${examples[@]}" 2>&1); then
    sed 's/^/validate_manifests: /' <<<"$out"
else
    fail "ClawdBot documents do not match $CRD:"
    sed 's/^/    /' <<<"$out" >&2
fi

# --- 3. self-test: both checks reject broken objects -------------------------------
cat >"$WORK/broken-clawdbot.yaml" <<'YAML'
apiVersion: clawdbot.io/v1alpha1
kind: ClawdBot
metadata:
  name: broken
spec:
  replicas: three
  modle: {}
YAML
if out=$("$VENV/bin/python" "$SCHEMA_CHECK" "$CRD" "$WORK/broken-clawdbot.yaml" 2>&1); then
    fail "self-test: the schema check accepted a broken ClawdBot"
elif ! grep -q 'spec.replicas' <<<"$out" || ! grep -q "modle" <<<"$out"; then
    fail "self-test: the schema check did not name spec.replicas and the unknown field modle: $out"
fi
cat >"$WORK/broken-cluster.yaml" <<'YAML'
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: broken
spec:
  instances: two
  storage:
    size: 1Gi
YAML
if "$VENV/bin/python" "$SCHEMA_CHECK" "$CNPG_CRD" "$WORK/broken-cluster.yaml" >/dev/null 2>&1; then
    fail "self-test: the CloudNativePG schema check accepted a broken Cluster"
fi
cat >"$WORK/broken-servicemonitor.yaml" <<'YAML'
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: broken
spec:
  selector: {}
  endpoints:
  - port: metrics
    intervall: 30s
YAML
if "$VENV/bin/python" "$SCHEMA_CHECK" tests/operator/crds/monitoring.coreos.com_servicemonitors.yaml \
    "$WORK/broken-servicemonitor.yaml" >/dev/null 2>&1; then
    fail "self-test: the ServiceMonitor schema check accepted an unknown field"
fi
cat >"$WORK/broken-children.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: broken
spec:
  prots: []
YAML
if "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" --quiet "$WORK/broken-children.yaml" >/dev/null 2>&1; then
    fail "self-test: kubernetes-validate --strict accepted an unknown field"
fi

if (( failures > 0 )); then
    die "$failures check(s) failed"
fi
log "all ${#examples[@]} examples valid (rendered children, Secrets, CRD schema)"
