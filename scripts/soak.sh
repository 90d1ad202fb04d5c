#!/usr/bin/env bash
# The soak (BENCHMARKS.md, "Reliability"; docs/soak.md): a throwaway
# PostgreSQL, two `serve` instances of the release binary on it behind a TCP
# proxy, events delivered as Stripe delivers them, faults on a printed
# schedule, the purge and the web app's writes beside it; then the database
# is checked against a ledger worked out from the events alone. Loopback
# only; everything it starts, it stops. Exit 0 when nothing was lost,
# applied twice or left wrong; 1 when a check failed; 2 on an error.
#
#   scripts/soak.sh                       # ~50,000 events, 2,000 users, ~5 min
#   SOAK_EVENTS=3000 scripts/soak.sh      # a smoke run, ~1.5 min
#
# Settings (environment):
#   SOAK_EVENTS   events generated (50000)
#   SOAK_USERS    users they are spread over (events / 25, at most 2000)
#   SOAK_SECONDS  seconds over which they are sent (events * 240 / 50000, at least 90)
#   SOAK_FAULTS   faults injected, the kinds in turn (10: each of five twice)
#   SOAK_KINDS    which kinds, comma-separated (kill9,pg-fast,sigterm,blackhole,pg-immediate)
#   SOAK_GRACE    seconds after the window during which deliveries are still retried (180)
#   SOAK_SEED     seed of the events and of the delivery order (1)
#   SOAK_BIN      the session-worker binary (default: target/release/session-worker, built first)
#   SOAK_KEEP     a folder to keep the instances' and PostgreSQL's logs in
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_EVENTS=${SOAK_EVENTS:-50000}
default_users=$((SOAK_EVENTS / 25))
[ "$default_users" -ge 1 ] || default_users=1
[ "$default_users" -le 2000 ] || default_users=2000
SOAK_USERS=${SOAK_USERS:-$default_users}
default_seconds=$((SOAK_EVENTS * 240 / 50000))
[ "$default_seconds" -ge 90 ] || default_seconds=90
SOAK_SECONDS=${SOAK_SECONDS:-$default_seconds}
SOAK_FAULTS=${SOAK_FAULTS:-10}
SOAK_KINDS=${SOAK_KINDS:-kill9,pg-fast,sigterm,blackhole,pg-immediate}
SOAK_GRACE=${SOAK_GRACE:-180}
SOAK_SEED=${SOAK_SEED:-1}
target_dir=${CARGO_TARGET_DIR:-target}
given_bin=${SOAK_BIN:-}
SOAK_BIN=${SOAK_BIN:-$target_dir/release/session-worker}
# The client is built in the dev profile: examples pull in the
# dev-dependencies, whose release build would cost minutes more, and the
# client has little to do (a few hundred requests a second).
client="$target_dir/debug/examples/soak"

if [ -z "${SOAK_INSIDE:-}" ]; then
    # Built (a no-op when up to date) unless given: a stale binary would
    # soak yesterday's code.
    if [ -z "$given_bin" ]; then
        echo "== build (release): session-worker" >&2
        cargo build --release --quiet --bin session-worker
    fi
    echo "== build (dev): the soak client (examples/soak)" >&2
    cargo build --quiet --example soak
    export SOAK_BIN SOAK_STARTED=$(date +%s)
    # Always a throwaway server (it is stopped on purpose), never the one
    # DATABASE_URL may name.
    exec env -u DATABASE_URL SOAK_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

# --- inside scripts/with-postgres.sh: DATABASE_URL, PG_BINDIR are set ---------

sql() { PGOPTIONS='-c client_min_messages=warning' "$PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
datadir=$(sql "$DATABASE_URL" -c 'SHOW data_directory')
pg_ctl="$PG_BINDIR/pg_ctl -D $datadir"
# with-postgres.sh runs the server as postgres when we are root.
[ "$(id -u)" -ne 0 ] || pg_ctl="runuser -u postgres -- $pg_ctl"
server=${DATABASE_URL%/*}
# with-postgres.sh turns synchronous_commit off for speed; then a crash
# (pg_ctl stop -m immediate) loses commits already acknowledged, which would
# show here as lost events and sessions that are no fault of the worker's.
# fsync stays off: a process crash keeps what reached the kernel.
sql "$DATABASE_URL" -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null
sql "$DATABASE_URL" -c "CREATE DATABASE soak"
work=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
cleanup() {
    if [ -n "${SOAK_KEEP:-}" ]; then
        mkdir -p "$SOAK_KEEP"
        cp "$work"/*.log "$(dirname "$datadir")/server.log" "$SOAK_KEEP/" 2>/dev/null || true
        echo "soak: logs kept in $SOAK_KEEP" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $("$PG_BINDIR/postgres" --version), session-worker $("$SOAK_BIN" --version 2>/dev/null || echo '?'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
status=0
"$client" --bin "$SOAK_BIN" --database-url "$server/soak" --pg-ctl "$pg_ctl" \
    --pg-log "$(dirname "$datadir")/server.log" --work "$work" \
    --events "$SOAK_EVENTS" --users "$SOAK_USERS" --seconds "$SOAK_SECONDS" \
    --faults "$SOAK_FAULTS" --kinds "$SOAK_KINDS" --grace "$SOAK_GRACE" --seed "$SOAK_SEED" || status=$?
echo "soak: total $(($(date +%s) - SOAK_STARTED)) s, exit $status"
exit "$status"
