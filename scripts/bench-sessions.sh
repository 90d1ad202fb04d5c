#!/usr/bin/env bash
# The session API benchmark (BENCHMARKS.md): GET /sessions/{id} and
# POST /sessions on the 1,000,000-row table, against the same SQL through
# pgbench in the same run, on a throwaway PostgreSQL, loopback only.
#
#   scripts/bench-sessions.sh         # build, seed, RUNS rounds, a table
#
# Settings (environment): PHASE_SECS (15 s per measured phase), CONCURRENCY
# (16), RUNS (3). Each round runs, one after the other on the same database:
# pgbench GET, the worker GET (examples/sessionload.rs over CONCURRENCY
# keep-alive connections), pgbench POST, the worker POST. Exits non-zero
# when an answer is not the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."

PHASE_SECS=${PHASE_SECS:-15}
CONCURRENCY=${CONCURRENCY:-16}
RUNS=${RUNS:-3}
target_dir=${CARGO_TARGET_DIR:-target}

if [ -z "${BENCH_SESSIONS_INSIDE:-}" ]; then
    echo "== build (release): session-worker, example sessionload" >&2
    cargo build --release --quiet --bin session-worker --example sessionload
    # Always a throwaway server, never the one DATABASE_URL may name.
    exec env -u DATABASE_URL BENCH_SESSIONS_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

# --- inside scripts/with-postgres.sh: DATABASE_URL, PG_BINDIR are set ---------

bin="$target_dir/release"
server=${DATABASE_URL%/*}
db="$server/bench_sessions"
source scripts/lib/bench.sh bench-sessions
token="bench-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

# Nearest-rank percentiles (ms) of a file of microseconds: "p50 p99".
percentiles() {
    sort -n "$1" | awk '{v[NR] = $1} END {
        split("0.50 0.99", q, " ");
        for (i = 1; i <= 2; i++) { r = int(q[i] * NR); if (r < q[i] * NR) r++; if (r < 1) r = 1;
            printf "%s%.3f", (i > 1 ? " " : ""), v[r] / 1000 }
        print "" }'
}

say "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$PG_BINDIR/postgres" --version), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "== $PHASE_SECS s per phase, concurrency $CONCURRENCY, $RUNS rounds"

say "== seed: migrate, 1,000,000 sessions (bench/seed.sql)"
started=$(date +%s)
sql "$DATABASE_URL" -c "CREATE DATABASE bench_sessions"
DATABASE_URL="$db" LOG_FORMAT=text RUST_LOG=warn "$bin/session-worker" migrate >/dev/null
sql "$db" -f bench/seed.sql
# The live sessions get ids that the load generator and pgbench can both
# name at random: live_<n, 38 digits> (43 characters, as the worker's own).
live=$(sql "$db" -c "WITH live AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM user_sessions
        WHERE is_active AND expires_at > (now() AT TIME ZONE 'UTC') + interval '30 minutes')
    UPDATE user_sessions u SET session_id = 'live_' || lpad(live.n::text, 38, '0')
    FROM live WHERE u.id = live.id RETURNING 1" | wc -l)
sql "$db" -c "VACUUM ANALYZE user_sessions" -c "CHECKPOINT"
say "   seeded in $(($(date +%s) - started)) s: $(sql "$db" -c "SELECT count(*) FROM user_sessions") rows, $live live"

port=$(free_port)
DATABASE_URL="$db" STRIPE_WEBHOOK_SECRET=whsec_bench SESSION_API_TOKEN="$token" PURGE_SCHEDULE=off \
    HOST=127.0.0.1 PORT="$port" LOG_FORMAT=json "$bin/session-worker" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
wait_ready "$port"

# pgbench: "<tps> <p50> <p99>"
run_pgbench() { # get|post round
    local out="$work/pgbench-$1-$2"
    mkdir -p "$out"
    "$PG_BINDIR/pgbench" -n -M prepared -c "$CONCURRENCY" -j 2 -T "$PHASE_SECS" -D live="$live" \
        -f "bench/pgbench/session_$1.sql" --log --log-prefix="$out/tx" "$db" >"$out.out" 2>"$out.err" ||
        { cat "$out.err" >&2; fail "pgbench $1"; }
    local failed
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out.out")
    [ "${failed:-0}" = 0 ] || fail "pgbench $1: $failed failed transactions"
    cat "$out"/tx* | awk '{print $3}' >"$out.lat"
    echo "$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out.out" | awk '{printf "%.0f", $1}') $(percentiles "$out.lat")"
}

# the worker through examples/sessionload.rs: "<per_s> <p50> <p99>"
run_worker() { # get|post round
    local out="$work/worker-$1-$2.json"
    SESSION_API_TOKEN="$token" "$bin/examples/sessionload" --addr "127.0.0.1:$port" --mode "$1" \
        --live "$live" --concurrency "$CONCURRENCY" --seconds "$PHASE_SECS" --seed "$2" >"$out" ||
        fail "load generator (server log: $work/serve.log)"
    [ "$(json_field "$out" unexpected)" = 0 ] || fail "$1: $(json_field "$out" unexpected) unexpected answers"
    echo "$(json_field "$out" per_s) $(json_field "$out" p50_ms) $(json_field "$out" p99_ms)"
}

results="$work/results"
for round in $(seq 1 "$RUNS"); do
    for mode in get post; do
        sql "$db" -c "CHECKPOINT"
        read -r p_tps p_p50 p_p99 <<<"$(run_pgbench "$mode" "$round")"
        read -r w_tps w_p50 w_p99 <<<"$(run_worker "$mode" "$round")"
        # fail() inside $(...) ends only the subshell: an empty figure is its trace.
        [ -n "$p_tps" ] && [ -n "$p_p99" ] && [ -n "$w_tps" ] && [ -n "$w_p99" ] || fail "round $round $mode"
        ratio=$(awk -v a="$w_tps" -v b="$p_tps" 'BEGIN{printf "%.2f", a / b}')
        say "   round $round $mode: worker $w_tps/s p50 $w_p50 p99 $w_p99 ms | pgbench $p_tps tps p50 $p_p50 p99 $p_p99 ms | ratio $ratio"
        echo "$mode $round $w_tps $w_p50 $w_p99 $p_tps $p_p50 $p_p99 $ratio" >>"$results"
    done
done
rss_kb=$(awk '/^VmHWM:/{print $2}' "/proc/$serve_pid/status")
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "session-worker serve exited with $?"
serve_pid=

median_of() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
med() { awk -v m="$1" -v c="$2" '$1 == m {print $c}' "$results" | median_of; }
cat <<TABLE

## Session API benchmark: $PHASE_SECS s per phase, concurrency $CONCURRENCY, median of $RUNS rounds
$(nproc) cores, $("$PG_BINDIR/postgres" --version), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); worker peak RSS $(awk -v k="$rss_kb" 'BEGIN{printf "%.1f", k / 1024}') MiB

| route | worker req/s | p50 ms | p99 ms | pgbench tps (same SQL) | p50 ms | p99 ms | worker / pgbench |
| --- | --- | --- | --- | --- | --- | --- | --- |
| GET /sessions/{id} | $(med get 3) | $(med get 4) | $(med get 5) | $(med get 6) | $(med get 7) | $(med get 8) | $(med get 9) |
| POST /sessions | $(med post 3) | $(med post 4) | $(med post 5) | $(med post 6) | $(med post 7) | $(med post 8) | $(med post 9) |

rounds (route round worker_rps p50 p99 pgbench_tps p50 p99 ratio):
$(cat "$results")
TABLE
