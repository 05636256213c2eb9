#!/usr/bin/env bash
# Makes sure the local services the tests use answer on 127.0.0.1:
#   PostgreSQL :5432, MariaDB :3306, Redis :6379
# Starts any that is down, then waits (bounded) until all answer.
# Idempotent: when everything is up it only probes and prints one line.
#
# Env: SERVICES_WAIT_S (default 30) bounds the wait after starting.
set -euo pipefail

WAIT_S=${SERVICES_WAIT_S:-30}

log() { printf 'ensure-services: %s\n' "$*"; }

# TCP probe, used when a service's client tool is not installed.
tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -h 127.0.0.1 -p 5432 -q -t 2 >/dev/null 2>&1
    else
        tcp_open 5432
    fi
}

redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]
    else
        tcp_open 6379
    fi
}

mariadb_up() {
    # `mariadb-admin ping` exits 0 whenever the server answers, even with
    # "Access denied", so it tests liveness, not credentials.
    if command -v mariadb-admin >/dev/null 2>&1; then
        mariadb-admin -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1
    else
        tcp_open 3306
    fi
}

pg_start() {
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
}

redis_start() {
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

mariadb_start() {
    # /run is a tmpfs: on a fresh boot the socket directory is gone and
    # mariadbd would fail to create its socket.
    if [[ ! -d /run/mysqld ]] && id mysql >/dev/null 2>&1; then
        install -d -o mysql -g mysql /run/mysqld
    fi
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

# name probe starter log-hint
SERVICES=(
    "postgresql pg_up pg_start /var/log/postgresql/"
    "mariadb mariadb_up mariadb_start /var/log/mysql/error.log"
    "redis redis_up redis_start /var/log/redis/ci.log"
)

started=()
for entry in "${SERVICES[@]}"; do
    read -r name probe starter _ <<<"$entry"
    if ! "$probe"; then
        log "$name is down; starting it"
        # A failing start command is reported but not fatal: the wait below
        # decides (the service may have come up concurrently).
        "$starter" || log "warning: starting $name exited with status $?"
        started+=("$entry")
    fi
done

if ((${#started[@]} == 0)); then
    log "postgresql, mariadb, redis are up"
    exit 0
fi

deadline=$((SECONDS + WAIT_S))
while :; do
    down=()
    for entry in "${started[@]}"; do
        read -r name probe _ <<<"$entry"
        "$probe" || down+=("$entry")
    done
    if ((${#down[@]} == 0)); then
        log "postgresql, mariadb, redis are up"
        exit 0
    fi
    if ((SECONDS >= deadline)); then
        for entry in "${down[@]}"; do
            read -r name _ _ hint <<<"$entry"
            log "error: $name still not answering after ${WAIT_S}s; see $hint" >&2
        done
        exit 1
    fi
    sleep 0.5
done
