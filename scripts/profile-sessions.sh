#!/usr/bin/env bash
# Where the CPU of `GET /sessions/{id}` goes (BENCHMARKS.md, "The session
# API"): a throwaway PostgreSQL with 100,000 live sessions, `session-worker
# serve` of a release build, `examples/sessionload` over CONCURRENCY
# keep-alive connections for SECS seconds; in a window of WINDOW seconds in
# the middle, the CPU time of the worker, of the load generator and of this
# PostgreSQL cluster (from /proc), and the reader's batches (its metrics).
# Loopback only. A profiling aid beside scripts/bench-sessions.sh, which
# gives the figures to quote.
#
#   scripts/profile-sessions.sh                      # CPU split and batches
#   PROFILE=perf scripts/profile-sessions.sh         # + perf record of the worker (perf.data here)
#   PROFILE=strace scripts/profile-sessions.sh       # + system calls of the worker (strace -c)
#
# Settings (environment): SECS (10), WINDOW (5), CONCURRENCY (16),
# SW_BIN (the worker binary to measure; default: target/release/session-worker,
# built first), TOKIO_WORKER_THREADS (the worker's, when set), PERF_FREQ (perf's
# samples per second, 499).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
WINDOW=${WINDOW:-5}
CONCURRENCY=${CONCURRENCY:-16}
target_dir=${CARGO_TARGET_DIR:-target}

if [ -z "${PROFILE_SESSIONS_INSIDE:-}" ]; then
    if [ -z "${SW_BIN:-}" ]; then
        cargo build --release --quiet --bin session-worker --example sessionload
    else
        cargo build --release --quiet --example sessionload
    fi
    exec env -u DATABASE_URL PROFILE_SESSIONS_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

# --- inside scripts/with-postgres.sh: DATABASE_URL, PG_BINDIR are set ---------

worker_bin=${SW_BIN:-$target_dir/release/session-worker}
token="profile-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
source scripts/lib/bench.sh profile-sessions

metric() { sed -n "s/^$1 //p" "$work/metrics"; }

DATABASE_URL="$DATABASE_URL" LOG_FORMAT=text RUST_LOG=warn "$worker_bin" migrate >/dev/null
sql "$DATABASE_URL" -c "INSERT INTO user_sessions (session_id, username, session_data, expires_at, is_active)
        SELECT 'live_' || lpad(n::text, 38, '0'), 'user' || (n % 5000),
               '{\"csrf\":\"abcdefabcdef\",\"cart\":[1,2,3],\"theme\":\"dark\"}',
               (now() AT TIME ZONE 'UTC') + interval '1 day', true
        FROM generate_series(1, 100000) n" -c "VACUUM ANALYZE user_sessions"

port=$(free_port)
DATABASE_URL="$DATABASE_URL" STRIPE_WEBHOOK_SECRET=whsec_profile SESSION_API_TOKEN="$token" \
    PURGE_SCHEDULE=off HOST=127.0.0.1 PORT="$port" LOG_FORMAT=json "$worker_bin" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
wait_ready "$port"
kill -0 "$serve_pid" 2>/dev/null || fail "serve exited: $(tail -3 "$work/serve.log")"

SESSION_API_TOKEN="$token" "$target_dir/release/examples/sessionload" --addr "127.0.0.1:$port" --mode get \
    --live 100000 --concurrency "$CONCURRENCY" --seconds "$SECS" --seed 1 >"$work/load.json" &
load_pid=$!
sleep $(((SECS - WINDOW) / 2))
w0=$(proc_ticks "$serve_pid") l0=$(proc_ticks "$load_pid") p0=$(pg_ticks) t0=$(date +%s.%N)
case "${PROFILE:-}" in
perf) perf record -F ${PERF_FREQ:-499} --call-graph dwarf,16384 -p "$serve_pid" -o perf.data -- sleep "$WINDOW" >/dev/null 2>&1 ;;
strace) timeout "$WINDOW" strace -c -f -p "$serve_pid" -o "$work/strace" || true ;;
*) sleep "$WINDOW" ;;
esac
w1=$(proc_ticks "$serve_pid") l1=$(proc_ticks "$load_pid") p1=$(pg_ticks) t1=$(date +%s.%N)
wait "$load_pid" || fail "load generator (server log: $work/serve.log)"
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics"

hz=$(getconf CLK_TCK)
per_s=$(json_field "$work/load.json" per_s)
reads=$(metric session_worker_session_api_read_batch_size_sum)
batches=$(metric session_worker_session_api_read_batch_size_count)
awk -v w=$((w1 - w0)) -v l=$((l1 - l0)) -v p=$((p1 - p0)) -v hz="$hz" -v t0="$t0" -v t1="$t1" \
    -v rps="$per_s" -v total="$SECS" -v conns="$CONCURRENCY" -v reads="$reads" -v batches="$batches" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
    secs = t1 - t0; n = rps * secs
    printf "GET /sessions/{id}: %d req/s over %d s at %d connections; load average %s\n", rps, total, conns, load
    printf "reads per statement: %.1f (%d reads, %d statements)\n", reads / batches, reads, batches
    printf "CPU per request in a %.1f s window: worker %.1f us, load generator %.1f us, PostgreSQL %.1f us\n",
        secs, w / hz / n * 1e6, l / hz / n * 1e6, p / hz / n * 1e6
    printf "cores busy: worker %.2f, load generator %.2f, PostgreSQL %.2f\n", w / hz / secs, l / hz / secs, p / hz / secs
}'
[ "${PROFILE:-}" = strace ] && head -15 "$work/strace"
[ "${PROFILE:-}" = perf ] && echo "perf.data written: perf report -i perf.data --no-children"
exit 0
