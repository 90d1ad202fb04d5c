#!/usr/bin/env bash
# The webhook benchmark (BENCHMARKS.md): session-worker against the limit of
# its own SQL, on a throwaway PostgreSQL, loopback only.
#
#   scripts/bench-webhook.sh            # build, seed, RUNS rounds, table of medians
#   BASELINE_BIN=../wt-base/target/release scripts/bench-webhook.sh
#                                       # two builds in turn: before / after
#
# Settings (environment): EVENTS (30000 per round), CONCURRENCY (16),
# RUNS (3); BUILD=0 uses the release binaries already built (so that a run
# under `flock /work/bench.lock` holds the lock for the benchmark alone).
# Each round copies the seeded database three times (CREATE DATABASE ...
# TEMPLATE); runs the worker's SQL through pgbench on one copy;
# drives `session-worker serve` with examples/loadgen.rs over CONCURRENCY
# keep-alive connections on another, and checks the effect in the database;
# then runs pgbench again on the third. Exits non-zero when a check fails.
#
# With BASELINE_BIN (a folder holding another build's release session-worker,
# e.g. a worktree of an older commit built with `cargo build --release`),
# each round instead runs the worker of that build and this one's, alternately
# (which goes first swaps every round), each on a fresh copy of a database
# seeded the same way and migrated by its own binary, driven by this tree's
# examples/loadgen.rs with the same events; and prints per build events/s,
# p50/p99, session rows written and CPU per event, and the ratios after /
# before. No pgbench and no signature timing in that mode.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-30000}
CONCURRENCY=${CONCURRENCY:-16}
RUNS=${RUNS:-3}
target_dir=${CARGO_TARGET_DIR:-target}

if [ -z "${BENCH_WEBHOOK_INSIDE:-}" ]; then
    export BENCH_WEBHOOK_STARTED=$(date +%s)
    if [ "${BUILD:-1}" != 0 ]; then
        echo "== build (release): session-worker, examples loadgen and sigbench" >&2
        started=$(date +%s)
        cargo build --release --quiet --bin session-worker --example loadgen --example sigbench
        echo "   built in $(($(date +%s) - started)) s" >&2
    fi
    # Always a throwaway server, never the one DATABASE_URL may name.
    exec env -u DATABASE_URL BENCH_WEBHOOK_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

# --- inside scripts/with-postgres.sh: DATABASE_URL, PG_BINDIR are set ---------

bin="$target_dir/release"
baseline=${BASELINE_BIN:-}
if [ -n "$baseline" ]; then
    [ -x "$baseline/session-worker" ] || { echo "bench-webhook: no $baseline/session-worker" >&2; exit 1; }
fi
server=${DATABASE_URL%/*}
source scripts/lib/bench.sh bench-webhook
secret="whsec_bench_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

# CPU time in clock ticks (1/100 s): proc_ticks, pg_ticks (scripts/lib/bench.sh).
# Busy ticks of the whole machine (everything but idle and iowait).
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# Ticks -> microseconds per event.
us_per_event() { awk -v t="$1" -v n="$2" 'BEGIN{printf "%.0f", t * 10000 / n}'; }

# Nearest-rank percentiles (ms) of a file of microseconds, one a line:
# "p50 p99 max", the rule examples/loadgen.rs applies to its own.
percentiles() {
    sort -n "$1" | awk '{v[NR] = $1} END {
        split("0.50 0.99 1.0", q, " ");
        for (i = 1; i <= 3; i++) { r = int(q[i] * NR); if (r < q[i] * NR) r++; if (r < 1) r = 1;
            printf "%s%.3f", (i > 1 ? " " : ""), v[r] / 1000 }
        print "" }'
}

say "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$PG_BINDIR/postgres" --version)"
say "== events $EVENTS per round, concurrency $CONCURRENCY, $RUNS rounds"

# No checkpoint in the middle of a measured phase: each phase starts with one.
sql "$DATABASE_URL" -c "ALTER SYSTEM SET max_wal_size = '8GB'" \
    -c "ALTER SYSTEM SET checkpoint_timeout = '30min'" -c "SELECT pg_reload_conf()" >/dev/null

# PostgreSQL 15 copies a database through the WAL unless told otherwise;
# copying the files is faster here, and what older versions always do.
copy_strategy=
[ "$(sql "$DATABASE_URL" -c 'SHOW server_version_num')" -lt 150000 ] || copy_strategy="STRATEGY FILE_COPY"

# seed TEMPLATE BIN: a database migrated by BIN's session-worker, then seeded.
seed() {
    local started
    started=$(date +%s)
    sql "$DATABASE_URL" -c "CREATE DATABASE $1"
    DATABASE_URL="$server/$1" LOG_FORMAT=text RUST_LOG=warn "$2/session-worker" migrate >/dev/null
    sql "$server/$1" -f bench/seed.sql
    say "   $1 seeded in $(($(date +%s) - started)) s ($(sql "$server/$1" -c "SELECT pg_size_pretty(pg_database_size(current_database()))"))"
}
say "== seed: migrate, 1,000,000 sessions, 2,000 paying users"
seed bench_template "$bin"
[ -z "$baseline" ] || seed bench_template_baseline "$baseline"

# Loads what the events touch into shared buffers, as on a live server.
warm() {
    sql "$1" -c "SELECT sum(length(session_data)) FROM user_sessions
                 WHERE username IN (SELECT 'user_' || lpad((u * 100)::text, 6, '0') FROM generate_series(1, 2000) u)" \
        -c "SELECT count(*) FROM sw_subscriptions" -c "SELECT count(*) FROM sw_customers" >/dev/null
}

# pgbench on the copy bench_pgbench_$2: writes "$work/pgbench-$1-$2.txt" as
# "transactions tps failed client_us pg_us unattributed_us" (CPU per event),
# and its per-transaction log under "$work/pgbench-$1-$2/".
run_pgbench() {
    local db="$server/bench_pgbench_$2" out="$work/pgbench-$1-$2" created tps tx failed client_ticks pg0 pg1 m0 m1
    warm "$db"
    sql "$db" -c "CHECKPOINT"
    mkdir -p "$out"
    created=$(date +%s)
    pg0=$(pg_ticks)
    m0=$(machine_ticks)
    TIMEFORMAT='%U %S'
    { time "$PG_BINDIR/pgbench" -n -M prepared -c "$CONCURRENCY" -j 2 -t $((EVENTS / CONCURRENCY)) \
        -D created="$created" -D period_end=$((created + 2592000)) \
        -f bench/pgbench/subscription.sql@8 -f bench/pgbench/checkout.sql@2 \
        --log --log-prefix="$out/tx" "$db" >"$out.out" 2>"$out.err"; } 2>"$out.time" ||
        { cat "$out.err" >&2; fail "pgbench"; }
    pg1=$(pg_ticks)
    m1=$(machine_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out.out" | awk '{printf "%.0f", $1}')
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out.out")
    client_ticks=$(awk '{printf "%.0f", ($1 + $2) * 100}' "$out.time")
    read -r applied recorded <<<"$(sql "$db" -c "SELECT count(*) FILTER (WHERE outcome = 'applied') || ' ' || count(*) FROM sw_events WHERE event_id LIKE 'evt\_1Pgb%'")"
    [ "$recorded" = "$tx" ] && [ "$applied" = "$tx" ] ||
        fail "pgbench: $recorded events recorded, $applied applied, of $tx transactions: not the same work"
    say "   pgbench ($2 the worker): $tx transactions, $tps tps, p50/p99/max $(awk '{print $3}' "$out"/tx* >"$out.lat" && percentiles "$out.lat" | tr ' ' /) ms, all applied"
    echo "$tx $tps ${failed:-0} $(us_per_event "$client_ticks" "$tx") $(us_per_event $((pg1 - pg0)) "$tx") \
$(us_per_event $((m1 - m0 - (pg1 - pg0) - client_ticks)) "$tx")" >"$out.txt"
}

# run_worker LABEL BIN ROUND: `BIN/session-worker serve` on the copy
# bench_worker (made by the caller), driven by this tree's loadgen with seed
# ROUND; checks the effect; leaves the load generator's JSON in
# "$work/loadgen-LABEL-ROUND.json" and writes "$work/worker-LABEL-ROUND.txt":
# "rss_mib worker_us pg_us rows_written load1" (CPU µs per event; session
# rows the run updated, from pg_stat_user_tables; the 1-minute load average
# at the start).
run_worker() {
    local label=$1 wbin=$2 round=$3 db="$server/bench_worker" lg="$work/loadgen-$1-$3.json"
    local before after port pg0 pg1 w0 w1 rss_kb upd0 upd1 load1 check warmup n
    before=$(sql "$db" -f bench/fingerprint.sql)
    warm "$db"
    sql "$db" -c "CHECKPOINT"
    upd0=$(rows_updated "$db")
    load1=$(cut -d' ' -f1 /proc/loadavg)
    port=$(free_port)
    DATABASE_URL="$db" STRIPE_WEBHOOK_SECRET="$secret" HOST=127.0.0.1 PORT="$port" LOG_FORMAT=json \
        "$wbin/session-worker" serve >"$work/serve-$label-$round.log" 2>&1 &
    serve_pid=$!
    pg0=$(pg_ticks)
    w0=$(proc_ticks "$serve_pid")
    STRIPE_WEBHOOK_SECRET="$secret" "$bin/examples/loadgen" --addr "127.0.0.1:$port" \
        --events "$EVENTS" --concurrency "$CONCURRENCY" --seed "$round" \
        --expected "$work/expected.csv" >"$lg" ||
        fail "load generator, $label (server log: see above)"
    w1=$(proc_ticks "$serve_pid")
    rss_kb=$(awk '/^VmHWM:/{print $2}' "/proc/$serve_pid/status")
    kill -TERM "$serve_pid"
    wait "$serve_pid" || fail "session-worker serve ($label) exited with $?"
    serve_pid=
    sleep 0.5
    pg1=$(pg_ticks)
    # The backends report their counts when they end; poll until they have.
    upd1=$(rows_updated "$db")
    for _ in $(seq 1 20); do
        sleep 0.25
        [ "$(rows_updated "$db")" = "$upd1" ] && break
        upd1=$(rows_updated "$db")
    done
    cat "$lg" >&2

    # --- the check: right effect, nothing else changed -------------------------
    after=$(sql "$db" -f bench/fingerprint.sql)
    [ "$before" = "$after" ] || fail "$label: rows outside the events' active sessions changed:
before: $before
after:  $after"
    warmup=$(sql "$db" -c "SELECT count(*) FROM sw_events WHERE event_id LIKE 'evt\_1Warm%'")
    check=$(sql "$db" -F ' ' -f bench/verify.sql <"$work/expected.csv")
    read -r users paying active wrong wrong_view recorded applied ignored total sessions <<<"$check"
    want_users=$((EVENTS < 2000 ? EVENTS : 2000))
    [ "$users" = "$want_users" ] && [ "$paying" = "$users" ] || fail "expected states for $users users ($paying paying), wanted $want_users"
    [ "$active" = $((users * 3)) ] || fail "$active active sessions of the events' users, wanted $((users * 3))"
    [ "$wrong" = 0 ] || fail "$label: $wrong of $active active sessions do not carry the expected subscription state"
    [ "$wrong_view" = 0 ] || fail "$label: $wrong_view users read a wrong state from user_subscription_status"
    [ "$recorded" = "$EVENTS" ] && [ "$applied" = "$EVENTS" ] || fail "$label: $recorded events recorded, $applied applied, wanted $EVENTS"
    [ "$ignored" = "$warmup" ] || fail "$label: warm-up events not all ignored"
    [ "$total" = $((100000 + EVENTS + warmup)) ] || fail "$label: sw_events holds $total rows, wanted $((100000 + EVENTS + warmup))"
    [ "$sessions" = 1000000 ] || fail "$label: user_sessions holds $sessions rows"
    say "   check passed ($label): $active active sessions of $users users right, $EVENTS events applied once, the other $(head -1 <<<"$before" | cut -d' ' -f1) sessions unchanged"
    if [ "$label" != baseline ]; then
        # This build's sessions also carry the "subscription" object (issue
        # 11); an older baseline's need not, so it is not asked of it.
        check=$(sql "$db" -c "SELECT count(*) FROM user_sessions
            WHERE right(username, 2) = '00' AND is_active AND expires_at > (now() AT TIME ZONE 'UTC')
              AND json_typeof(session_data::json -> 'subscription') IS DISTINCT FROM 'object'")
        [ "$check" = 0 ] || fail "$label: $check active sessions of paying users without a \"subscription\" object"
    fi
    n=$(json_field "$lg" events)
    echo "$(awk -v k="$rss_kb" 'BEGIN{printf "%.1f", k / 1024}') $(us_per_event $((w1 - w0)) "$n") \
$(us_per_event $((pg1 - pg0)) "$n") $((upd1 - upd0)) $load1" >"$work/worker-$label-$round.txt"
}
# Session rows updated in DATABASE so far (the statistics PostgreSQL keeps).
rows_updated() {
    sql "$1" -c "SELECT pg_stat_clear_snapshot()" -c "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'user_sessions'"
}
# A fresh copy of TEMPLATE named bench_worker.
fresh_copy() {
    sql "$DATABASE_URL" -c "DROP DATABASE IF EXISTS bench_worker" \
        -c "CREATE DATABASE bench_worker TEMPLATE $1 $copy_strategy"
}

median_of() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
if [ -n "$baseline" ]; then
    # --- two builds in turn ------------------------------------------------------
    say "== baseline: $baseline/session-worker; this build: $bin/session-worker"
    ab="$work/ab.tsv"
    for round in $(seq 1 "$RUNS"); do
        say "== round $round/$RUNS"
        order="baseline current"
        [ $((round % 2)) = 1 ] || order="current baseline"
        for label in $order; do
            if [ "$label" = baseline ]; then
                fresh_copy bench_template_baseline
                run_worker baseline "$baseline" "$round"
            else
                fresh_copy bench_template
                run_worker current "$bin" "$round"
            fi
            lg="$work/loadgen-$label-$round.json"
            read -r rss worker_us pg_us rows load1 <"$work/worker-$label-$round.txt"
            echo "$label $round $(json_field "$lg" events_per_s | awk '{printf "%.0f", $1}') \
$(json_field "$lg" p50_ms) $(json_field "$lg" p99_ms) $(json_field "$lg" max_ms) $(json_field "$lg" non_200) \
$rows $pg_us $worker_us $rss $load1" >>"$ab"
        done
    done
    # Column c of build `label`: "median (r1, r2, ...)".
    abcol() {
        local values
        values=$(awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$ab")
        echo "$(median_of <<<"$values") ($(paste -sd, <<<"$values" | sed 's/,/, /g'))"
    }
    # after / before of the medians of column c; and per round.
    abratio() {
        local a b
        a=$(awk -v c="$1" '$1 == "current" {print $c}' "$ab" | median_of)
        b=$(awk -v c="$1" '$1 == "baseline" {print $c}' "$ab" | median_of)
        echo "$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", a / b}') (rounds: $(awk -v c="$1" '
            $1 == "baseline" {b[$2] = $c} $1 == "current" {a[$2] = $c}
            END {for (r = 1; r in a; r++) printf "%s%.3f", (r > 1 ? ", " : ""), a[r] / b[r]}' "$ab"))"
    }
    cat <<TABLE

## Webhook benchmark, two builds in turn: $EVENTS events per round, concurrency $CONCURRENCY, median of $RUNS rounds (each round's value in brackets)

machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/{print $2}') GiB; $("$PG_BINDIR/postgres" --version)
before (baseline): $baseline/session-worker; after: $bin/session-worker

| | before | after | after / before |
| --- | --- | --- | --- |
| events/s | $(abcol baseline 3) | $(abcol current 3) | $(abratio 3) |
| p50 latency, ms | $(abcol baseline 4) | $(abcol current 4) | $(abratio 4) |
| p99 latency, ms | $(abcol baseline 5) | $(abcol current 5) | $(abratio 5) |
| max latency, ms | $(abcol baseline 6) | $(abcol current 6) | |
| non-200 answers | $(abcol baseline 7) | $(abcol current 7) | |
| session rows written | $(abcol baseline 8) | $(abcol current 8) | $(abratio 8) |
| CPU µs/event: PostgreSQL | $(abcol baseline 9) | $(abcol current 9) | $(abratio 9) |
| CPU µs/event: session-worker | $(abcol baseline 10) | $(abcol current 10) | $(abratio 10) |
| peak RSS of serve, MiB | $(abcol baseline 11) | $(abcol current 11) | |
| load average (1 min) at the start | $(abcol baseline 12) | $(abcol current 12) | |

The effect was checked after every run: passed (the "subscription" object
only for this build). Total time $(($(date +%s) - BENCH_WEBHOOK_STARTED)) s.
TABLE
    exit 0
fi

results="$work/results.tsv"
for round in $(seq 1 "$RUNS"); do
    say "== round $round/$RUNS"
    fresh_copy bench_template
    for copy in bench_pgbench_before bench_pgbench_after; do
        sql "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $copy" \
            -c "CREATE DATABASE $copy TEMPLATE bench_template $copy_strategy"
    done

    # --- pgbench: the same SQL, same concurrency, on a copy of its own -----------
    # Once before and once after the worker (on a third copy): the limit is
    # their mean, so that a change in the machine's other load during a round
    # weighs on both sides alike.
    run_pgbench "$round" before

    # --- session-worker, on its copy --------------------------------------------
    run_worker worker "$bin" "$round"
    read -r rss_mib worker_us pg_us rows_written _ <"$work/worker-worker-$round.txt"

    # --- pgbench again, on the third copy -----------------------------------------
    run_pgbench "$round" after
    read -r pgb_tx pgb_tps pgb_failed pgb_client_us pgb_pg_us pgb_rest_us <<<"$(awk '
        { tx += $1; tps += $2; failed += $3; client += $4; pg += $5; rest += $6 }
        END { printf "%d %.0f %d %.0f %.0f %.0f", tx, tps / NR, failed, client / NR, pg / NR, rest / NR }' \
        "$work/pgbench-$round-before.txt" "$work/pgbench-$round-after.txt")"
    read -r pgb_p50 pgb_p99 pgb_max <<<"$(cat "$work/pgbench-$round-"*/tx* | awk '{print $3}' >"$work/pgbench-lat" && percentiles "$work/pgbench-lat")"

    # --- one row of results ----------------------------------------------------
    lg="$work/loadgen-worker-$round.json"
    worker_eps=$(json_field "$lg" events_per_s | awk '{printf "%.0f", $1}')
    printf '%s\n' "$round $worker_eps $(json_field "$lg" p50_ms) $(json_field "$lg" p99_ms) $(json_field "$lg" max_ms) \
$(json_field "$lg" non_200) $(json_field "$lg" not_applied) $rss_mib \
$worker_us $(json_field "$lg" loadgen_cpu_us_per_event) $pg_us \
$(awk -v m="$(json_field "$lg" machine_cpu_us_per_event)" -v l="$(json_field "$lg" loadgen_cpu_us_per_event)" \
    -v w="$worker_us" -v p="$pg_us" 'BEGIN{printf "%.0f", m - l - w - p}') \
$pgb_tps $pgb_p50 $pgb_p99 $pgb_max $pgb_failed $pgb_client_us $pgb_pg_us $pgb_rest_us \
$(awk -v a="$worker_eps" -v b="$pgb_tps" 'BEGIN{printf "%.3f", a / b}') \
$(awk -v w="$worker_us" -v l="$(json_field "$lg" loadgen_cpu_us_per_event)" \
    -v p="$pg_us" -v c="$pgb_client_us" -v q="$pgb_pg_us" \
    'BEGIN{printf "%.3f", (q + c) / (p + w + l)}') $rows_written" >>"$results"
done

# --- signature verification -------------------------------------------------
# Three times each, interleaved, so that both see the same background load.
say "== signature verification, 4 KB body"
for i in 1 2 3; do
    "$bin/examples/sigbench" >"$work/sig-$i.json"
    command -v openssl >/dev/null || { echo 0 >>"$work/openssl-us"; continue; }
    openssl speed -hmac sha256 -bytes 4096 -seconds 2 2>/dev/null |
        awk '/^hmac\(sha256\)/{sub(/k$/, "", $2); printf "%.3f\n", 4096 / ($2 * 1000) * 1e6}' >>"$work/openssl-us"
done
sig_median() { for i in 1 2 3; do json_field "$work/sig-$i.json" "$1"; done | median_of; }
verify_us=$(sig_median verify_us)
hmac_us=$(sig_median hmac_sha256_us)
hmac_prekeyed_us=$(sig_median hmac_sha256_prekeyed_us)
openssl_us=$(median_of <"$work/openssl-us")

# --- the table ----------------------------------------------------------------
median() { # column number -> median over rounds
    awk -v c="$1" '{print $c}' "$results" | median_of
}
col() { # column number -> "median (r1, r2, r3)"
    echo "$(median "$1") ($(awk -v c="$1" '{printf "%s%s", (NR > 1 ? ", " : ""), $c}' "$results"))"
}
cat <<TABLE

## Webhook benchmark: $EVENTS events per round, concurrency $CONCURRENCY, median of $RUNS rounds (each round's value in brackets)

machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/{print $2}') GiB; $("$PG_BINDIR/postgres" --version)

| | session-worker (HTTP) | pgbench (same SQL; mean of the runs before and after the worker's) |
| --- | --- | --- |
| events/s | $(col 2) | $(col 13) |
| ratio worker / pgbench | $(col 21) | 1 |
| ratio the CPU per event predicts (client + PostgreSQL; nothing else on the machine) | $(col 22) | 1 |
| p50 latency, ms | $(col 3) | $(col 14) |
| p99 latency, ms | $(col 4) | $(col 15) |
| max latency, ms | $(col 5) | $(col 16) |
| non-200 answers / failed transactions | $(col 6) | $(col 17) |
| 200 but not applied | $(col 7) | 0 (checked) |
| session rows written | $(col 23) | |
| peak RSS of serve (VmHWM), MiB | $(col 8) | |
| CPU µs/event: PostgreSQL | $(col 11) | $(col 19) |
| CPU µs/event: session-worker / pgbench client | $(col 9) | $(col 18) |
| CPU µs/event: load generator (measured part) | $(col 10) | |
| CPU µs/event: not attributed (other jobs on the machine, interrupts) | $(col 12) | $(col 20) |

| signature, 4 KB body (median of 3; CPU time) | µs | vs openssl |
| --- | --- | --- |
| \`Verifier::verify\` | $verify_us | $(awk -v a="$verify_us" -v b="$openssl_us" 'BEGIN{printf "%.2fx", a / b}') |
| raw HMAC-SHA256, hmac + sha2 crates (key set up per call / precomputed) | $hmac_us / $hmac_prekeyed_us | $(awk -v a="$hmac_us" -v b="$openssl_us" 'BEGIN{printf "%.2fx", a / b}') |
| \`openssl speed -hmac sha256 -bytes 4096\` | $openssl_us | 1 |

The effect was checked after every round: passed. Total time $(($(date +%s) - BENCH_WEBHOOK_STARTED)) s.
TABLE
