#!/usr/bin/env bash
# Installs what building bot-runtime needs beyond the Rust toolchain: the
# vendored llama.cpp (crate llama-cpp-sys-2) is built with CMake and its
# bindings are generated with libclang. Both come from Debian's packages.
# Idempotent: when both are present it only checks (milliseconds).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh install-build-tools

# libclang itself (libclang.so.N or libclang-N.so.N), not the libclang-cpp
# that some images carry without it and bindgen cannot use.
have_libclang() {
    local dir
    for dir in /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu; do
        compgen -G "$dir/libclang.so*" >/dev/null && return 0
        compgen -G "$dir/libclang-[0-9]*.so*" >/dev/null && return 0
    done
    return 1
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
have_libclang || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)

if ((${#missing[@]} == 0)); then
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || die "please install: ${missing[*]} (no apt-get here)"
log "installing ${missing[*]} from Debian's packages"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || die "apt-get install ${missing[*]} failed"
log "installed ${missing[*]}"
