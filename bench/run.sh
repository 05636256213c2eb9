#!/usr/bin/env bash
# `make bench`: bot-runtime vs. the mock upstream called directly vs. LiteLLM
# in front of the same mock; writes docs/benchmarks.md.
#
# Knobs (environment):
#   BENCH_SKIP_LITELLM=1  skip LiteLLM (quick run; the doc says so)
#   BENCH_SKIP_BOT=1      skip bot-runtime (only to try the harness while
#                         bot-runtime does not build; the doc says so)
#   BENCH_OUT=path        where to write the report (default docs/benchmarks.md)
#   BENCH_SECS=10         measured seconds per run (LiteLLM max-RPS uses half)
#   BENCH_SKIP_OPERATOR=1 skip the operator benchmark (emulator, 1000 ClawdBots)
#   BENCH_SKIP_STATE=1    skip the Redis/PostgreSQL vs memory/SQLite benchmark
#   BENCH_SKIP_WEBHOOKS=1 skip the IM webhook benchmark (signed DingTalk and
#                         encrypted Feishu deliveries; bench/webhook_bench.py,
#                         about 4 minutes; `bash bench/webhooks.sh` runs it alone)
#   BENCH_SKIP_LOCAL=1    skip the local model and knowledge base benchmark
#                         (bench/local_model_bench.py, about 5 minutes;
#                         `bash bench/local.sh` runs it alone)
#   BENCH_SKIP_CRYPTO=1   skip encryption at rest: SM4-GCM / AES-256-GCM throughput
#                         and the chat path off vs on (about 3 minutes;
#                         `bash bench/crypto.sh` runs it alone)
#   BENCH_ROUNDS=3        direct/bot-runtime latency runs alternate this many
#                         times; the report takes the median (noise on 2 cores)
# All load is on 127.0.0.1 and every run is bounded in time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=$TARGET_DIR/release
OUT_MD=${BENCH_OUT:-docs/benchmarks.md}
SKIP_LITELLM=${BENCH_SKIP_LITELLM:-0}
SKIP_BOT=${BENCH_SKIP_BOT:-0}
SECS=${BENCH_SECS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=2
RATE=1000             # fixed-rate non-streaming target from the issue
STREAM_RATE=200       # modest rate for time-to-first-token
MAX_CONNS=32          # closed-loop concurrency for max RPS
LITELLM_RATE=30       # what a single LiteLLM process sustains comfortably
LITELLM_STREAM_RATE=20
LITELLM_MAX_SECS=$(((SECS + 1) / 2))
LITELLM_VERSION=1.106.2
VENV=$ROOT/.cache/bench-venv

# Two cores: the load generator owns CPU 0, the mock upstream CPU 1, and the
# proxy under test (bot-runtime or LiteLLM) is left unpinned, the same for both.
LOADGEN_CPU=0
MOCK_CPU=1
if [ "$(nproc)" -lt 2 ]; then LOADGEN_CPU=0 MOCK_CPU=0; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/clawdbot-bench.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        # Give each a moment to exit cleanly, then insist.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
meta() { printf '%s=%s\n' "$1" "$2" >>"$WORK/meta.txt"; }

# Microseconds since the epoch, from a bash builtin (no fork).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# 0 when GET http://127.0.0.1:PORT/PATH answers 200; bash's /dev/tcp keeps
# each probe to well under a millisecond.
probe() {
    local code=""
    { exec 9<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&9
    read -r -t 2 _ code _ <&9 || true
    exec 9<&- 9>&-
    [ "$code" = 200 ]
}

# wait_ready NAME PID PORT PATH TIMEOUT_S START_US -> prints ms to ready
wait_ready() {
    local name=$1 pid=$2 port=$3 path=$4 limit_us=$(($5 * 1000000)) start=$6 t
    while :; do
        if probe "$port" "$path"; then
            t=$(now_us)
            echo $(((t - start) / 1000))
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready (log: see above)"
        t=$(now_us)
        [ $((t - start)) -lt "$limit_us" ] || die "$name not ready after $5 s"
        sleep 0.002
    done
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# loadgen NAME ARGS... -> $WORK/NAME.json
loadgen() {
    local name=$1
    shift
    log "  $name: loadgen $*"
    taskset -c "$LOADGEN_CPU" "$BIN/loadgen" --json "$@" >"$WORK/$name.json"
    log "    $(cat "$WORK/$name.json")"
}

# Workloads. fixed/stream NAME URL RATE; max NAME URL SECS
fixed() {
    loadgen "$1" --url "$2" --body-file "$WORK/body.json" \
        --rate "$3" --connections 64 --duration-secs "$SECS" --warmup-secs "$WARMUP"
}
stream() {
    loadgen "$1" --url "$2" --body-file "$WORK/stream.json" --stream \
        --rate "$3" --connections 64 --duration-secs "$SECS" --warmup-secs "$WARMUP"
}
max() {
    loadgen "$1" --url "$2" --body-file "$WORK/body.json" \
        --connections "$MAX_CONNS" --duration-secs "$3" --warmup-secs 1
}

stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Forget it, so the exit trap cannot hit a recycled pid.
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- build
if [ "$SKIP_BOT" = 1 ]; then
    log "building clawdbot-bench (release; bot-runtime skipped)"
    cargo build --release -p clawdbot-bench
else
    log "building bot-runtime and clawdbot-bench (release)"
    cargo build --release -p bot-runtime -p clawdbot-bench
    [ -x "$BIN/bot-runtime" ] || die "no $BIN/bot-runtime after build"
fi
[ -x "$BIN/loadgen" ] && [ -x "$BIN/mock-upstream" ] || die "bench binaries missing in $BIN"

if [ "$SKIP_LITELLM" != 1 ]; then
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
        log "installing litellm[proxy]==$LITELLM_VERSION into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
    fi
fi

printf '%s' '{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}' >"$WORK/body.json"
printf '%s' '{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}' >"$WORK/stream.json"

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
meta kernel "$(uname -r)"
meta rustc "$(rustc --version)"
meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo uncommitted)"
meta secs "$SECS"
meta rounds "$ROUNDS"
meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
meta warmup "$WARMUP"
meta rate "$RATE"
meta stream_rate "$STREAM_RATE"
meta max_conns "$MAX_CONNS"
meta litellm_rate "$LITELLM_RATE"
meta litellm_stream_rate "$LITELLM_STREAM_RATE"
meta litellm_max_secs "$LITELLM_MAX_SECS"
meta litellm_version "$LITELLM_VERSION"
meta skip_litellm "$SKIP_LITELLM"
meta skip_bot "$SKIP_BOT"
meta loadgen_cpu "$LOADGEN_CPU"
meta mock_cpu "$MOCK_CPU"

# ---------------------------------------------------------------- (a) mock
log "(a) mock upstream, direct"
start=$(now_us)
taskset -c "$MOCK_CPU" "$BIN/mock-upstream" --threads 1 --model mock-model >"$WORK/mock.out" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
until grep -q '^listening on ' "$WORK/mock.out" 2>/dev/null; do
    kill -0 "$MOCK_PID" 2>/dev/null || die "mock-upstream died: $(cat "$WORK/mock.out")"
    [ $(($(now_us) - start)) -lt 5000000 ] || die "mock-upstream did not start"
    sleep 0.001
done
meta mock.ready_ms $((($(now_us) - start) / 1000))
MOCK_ADDR=$(sed -n 's|^listening on http://||p' "$WORK/mock.out" | head -n1)
MOCK_PORT=${MOCK_ADDR##*:}
meta mock.idle_rss_kb "$(rss_kb "$MOCK_PID" VmRSS)"
DIRECT_URL="http://$MOCK_ADDR/v1/chat/completions"

# ---------------------------------------------------------------- (b) bot-runtime
if [ "$SKIP_BOT" != 1 ]; then
    log "(b) bot-runtime in front of the mock"
    BOT_PORT=$(free_port)
    start=$(now_us)
    # The per-client rate limit (default 20 RPS) is off, or every load run
    # would measure 429s; state goes to the scratch dir, not ./data.
    MODEL_ENDPOINT="http://127.0.0.1:$MOCK_PORT/v1" MODEL_NAME=mock-model \
        CLAWDBOT_LISTEN="127.0.0.1:$BOT_PORT" \
        CLAWDBOT_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND=0 \
        CLAWDBOT_SERVER__DATA_DIR="$WORK/bot-data" \
        "$BIN/bot-runtime" >"$WORK/bot.log" 2>&1 &
    BOT_PID=$!
    PIDS+=("$BOT_PID")
    if ! ready=$(wait_ready bot-runtime "$BOT_PID" "$BOT_PORT" /health/ready 30 "$start"); then
        tail -n 40 "$WORK/bot.log" >&2
        die "bot-runtime did not become ready"
    fi
    meta bot.ready_ms "$ready"
    meta bot.idle_rss_kb "$(rss_kb "$BOT_PID" VmRSS)"
    meta bot.threads "$(awk '$1 == "Threads:" { print $2 }' "/proc/$BOT_PID/status")"
    BOT_URL="http://127.0.0.1:$BOT_PORT/v1/chat/completions"
fi

# Direct and bot-runtime runs alternate, so a noisy moment on the shared
# box hits one round of each rather than one side only.
for r in $(seq 1 "$ROUNDS"); do
    log "fixed rate, round $r/$ROUNDS"
    fixed "direct.fixed.r$r" "$DIRECT_URL" "$RATE"
    [ "$SKIP_BOT" = 1 ] || fixed "bot.fixed.r$r" "$BOT_URL" "$RATE"
done
max direct.max "$DIRECT_URL" "$SECS"
[ "$SKIP_BOT" = 1 ] || max bot.max "$BOT_URL" "$SECS"
for r in $(seq 1 "$ROUNDS"); do
    log "streaming, round $r/$ROUNDS"
    stream "direct.stream.r$r" "$DIRECT_URL" "$STREAM_RATE"
    [ "$SKIP_BOT" = 1 ] || stream "bot.stream.r$r" "$BOT_URL" "$STREAM_RATE"
done

if [ "$SKIP_BOT" != 1 ]; then
    kill -0 "$BOT_PID" 2>/dev/null || { tail -n 40 "$WORK/bot.log" >&2; die "bot-runtime died under load"; }
    meta bot.peak_rss_kb "$(rss_kb "$BOT_PID" VmHWM)"
    meta bot.log_lines "$(wc -l <"$WORK/bot.log")"
    stop "$BOT_PID"
fi

# ---------------------------------------------------------------- (c) LiteLLM
if [ "$SKIP_LITELLM" != 1 ]; then
    log "(c) LiteLLM $LITELLM_VERSION in front of the mock"
    LITELLM_PORT=$(free_port)
    cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: mock-model
    litellm_params:
      model: openai/mock-model
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: x
litellm_settings:
  telemetry: false
EOF
    start=$(now_us)
    # Offline cost map and no master key: no network and no auth, matching
    # how bot-runtime is run here.
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
        "$VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
        >"$WORK/litellm.log" 2>&1 &
    LITELLM_PID=$!
    PIDS+=("$LITELLM_PID")
    if ! ready=$(wait_ready litellm "$LITELLM_PID" "$LITELLM_PORT" /health/readiness 180 "$start"); then
        tail -n 40 "$WORK/litellm.log" >&2
        die "LiteLLM did not become ready"
    fi
    meta litellm.ready_ms "$ready"
    meta litellm.idle_rss_kb "$(rss_kb "$LITELLM_PID" VmRSS)"
    meta litellm.threads "$(awk '$1 == "Threads:" { print $2 }' "/proc/$LITELLM_PID/status")"
    LITELLM_URL="http://127.0.0.1:$LITELLM_PORT/v1/chat/completions"
    # Its sustainable rates, with the direct mock measured at the same rates.
    fixed direct.fixed_low "$DIRECT_URL" "$LITELLM_RATE"
    fixed litellm.fixed "$LITELLM_URL" "$LITELLM_RATE"
    max litellm.max "$LITELLM_URL" "$LITELLM_MAX_SECS"
    stream direct.stream_low "$DIRECT_URL" "$LITELLM_STREAM_RATE"
    stream litellm.stream "$LITELLM_URL" "$LITELLM_STREAM_RATE"
    meta litellm.peak_rss_kb "$(rss_kb "$LITELLM_PID" VmHWM)"
    stop "$LITELLM_PID"
fi

meta mock.peak_rss_kb "$(rss_kb "$MOCK_PID" VmHWM)"
stop "$MOCK_PID"

mkdir -p "$(dirname "$OUT_MD")"
python3 "$ROOT/bench/report.py" "$WORK" "$OUT_MD"

if [[ ${BENCH_SKIP_OPERATOR:-0} != 1 ]]; then
    log "operator: 1000 ClawdBots against the API server emulator"
    "$ROOT/scripts/install-test-tools.sh" >/dev/null
    cargo build --release -p clawdbot-operator
    for kind in plain managed; do
        python3 "$ROOT/bench/operator_bench.py" "$BIN/clawdbot-operator" \
            "$ROOT/.cache/operator-venv/bin/python" "$WORK/operator-$kind.json" 1000 60 "$kind" >/dev/null
    done
    python3 "$ROOT/bench/operator_bench.py" --markdown "$WORK/operator-plain.json" \
        "$WORK/operator-managed.json" >>"$OUT_MD"
fi

if [[ ${BENCH_SKIP_STATE:-0} != 1 ]]; then
    log "state: Redis + PostgreSQL vs in-memory + SQLite; log writer rows/s"
    "$ROOT/scripts/ensure-services.sh" >/dev/null
    cargo build --release -p bot-runtime --example log_writer_bench
    python3 "$ROOT/bench/state_bench.py" "$BIN" "$WORK/state.json" "$SECS" >/dev/null
    python3 "$ROOT/bench/state_bench.py" --markdown "$WORK/state.json" >>"$OUT_MD"
fi

if [[ ${BENCH_SKIP_WEBHOOKS:-0} != 1 && $SKIP_BOT != 1 ]]; then
    # mock-upstream and the API sink on CPU 1; webhook-load and bot-runtime
    # unpinned (see the section's text), each fixed-rate run 3 times. Redis
    # (started by the state section's ensure-services.sh) is measured when
    # it answers.
    log "IM webhooks: signed DingTalk and encrypted Feishu deliveries, SQLite and Redis"
    python3 "$ROOT/bench/webhook_bench.py" "$BIN" "$WORK/webhooks.json" "$SECS" >/dev/null
    python3 "$ROOT/bench/webhook_bench.py" --update "$WORK/webhooks.json" "$OUT_MD"
fi
if [[ ${BENCH_SKIP_LOCAL:-0} != 1 && $SKIP_BOT != 1 ]]; then
    log "local model (llama.cpp) and knowledge base"
    scripts/fetch-models.sh --eval
    cargo build --release -p bot-runtime -p clawdbot-bench --bins --examples
    python3 "$ROOT/bench/local_model_bench.py" "$BIN" "$WORK/local.json" >/dev/null
    python3 "$ROOT/bench/local_model_bench.py" --update "$WORK/local.json" "$OUT_MD"
fi
if [[ ${BENCH_SKIP_CRYPTO:-0} != 1 && $SKIP_BOT != 1 ]]; then
    log "encryption at rest: cipher throughput, and the chat path with encryption off and on"
    cargo build --release -p bot-runtime -p clawdbot-bench --bins --examples
    python3 "$ROOT/bench/crypto_bench.py" "$BIN" "$OUT_MD" "$SECS"
fi
log "wrote $OUT_MD"
