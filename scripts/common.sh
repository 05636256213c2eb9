# Shared by the set-up scripts: `source scripts/common.sh NAME` gives
# log/die messages prefixed with NAME, and as_root.

SCRIPT_NAME=${1:-setup}
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Run a command as root (directly when we are root, else through sudo).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}
