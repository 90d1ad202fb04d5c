#!/usr/bin/env bash
# Benchmark: `session-worker purge` in each of its modes against one big
# DELETE, on identical copies of a 1,000,000-session table, while a stream of
# single-row updates to active sessions (as the webhook makes them) runs
# beside it; the pacing curve (--pause-ratio); and the webhook's update and
# the app's read by session_id before the purge, right after it, and after a
# VACUUM. See BENCHMARKS.md for what it measures and the figures.
#
#   scripts/bench-purge.sh
#
# Settings (environment): BENCH_ROWS (1000000), BENCH_REPEAT (5),
# BENCH_RATE (updates/s, 1000), BENCH_IDLE_SECS (10), PURGE_BATCH_SIZE (5000),
# BENCH_PACES (pause ratios of the curve, "0.25 0.5 1"), BENCH_AFTER_SECS (5),
# BENCH_BIN (the binary to measure; unset, a release build); for a quicker
# look, BENCH_VARIANTS (the half-expired variants, default all of them),
# BENCH_STEADY (the 1% variants, "ordinary ordinaryskiplocked backlog auto"),
# BENCH_AFTER=0 (skips "after the purge") and BENCH_CONTROLS (the runs
# without a purge that show what any busy backend does to the updates' p99,
# "busy scan"; empty skips them).
#
# The update rate is what makes the p99 during a purge a measure: a backlog
# purge lasts about half a second, so at 200 updates a second its p99 was the
# second-slowest of about 100 updates, and one hiccup decided a run. At 1000
# a second each purge's window holds about 500 (the tables print how many).
# Their p99 is compared both with the run's idle phase (measured first) and
# with the 1.5 s of updates just before that purge began ("before": the same
# database at the same moment), and the variants' order turns each run, so
# that none is always measured later than the others.
#
# What each time includes: the purge's is the one it prints (`purged N
# sessions in M ms`): from taking its lock to releasing it (the lock, the
# clock, the estimate, every batch, the events, the unlock) on a connection
# opened before; the DELETE's is psql's \timing of the statement, on a
# connection opened before. Neither counts connecting or process start.
# Without DATABASE_URL it runs on a throwaway server (scripts/with-postgres.sh);
# with one, it creates and drops databases named bench_* on that server.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BENCH_INSIDE:-}" ]; then
    # BENCH_BIN skips the build: the purge's time is the server's, so a debug
    # binary measures the same (a release build takes long on a busy machine).
    [ -z "${BENCH_BIN:-}" ] && cargo build --release --quiet
    exec env BENCH_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

rows=${BENCH_ROWS:-1000000}
repeat=${BENCH_REPEAT:-5}
rate=${BENCH_RATE:-1000}
idle_secs=${BENCH_IDLE_SECS:-10}
batch_size=${PURGE_BATCH_SIZE:-5000}
paces=${BENCH_PACES:-0.25 0.5 1}
after=${BENCH_AFTER:-1}
steady=${BENCH_STEADY:-ordinary ordinaryskiplocked backlog auto}
after_secs=${BENCH_AFTER_SECS:-5}
controls=${BENCH_CONTROLS-busy scan}
[ -n "${PG_BINDIR:-}" ] && PATH="$PG_BINDIR:$PATH"
bin=${BENCH_BIN:-target/release/session-worker}
server=${DATABASE_URL%/*}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-purge.XXXXXX")
trap 'rm -rf "$work"' EXIT

sql() { psql -X -q -v ON_ERROR_STOP=1 "$server/$1" "${@:2}"; }
now() { date +%s.%N; }
checkpoints() { sql postgres -Atc "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"; }
say() { echo "bench: $*" >&2; }

# One template per scenario: `expired_every` = 2 is half the sessions
# expired, every other row, so over the whole table (the catch-up after the
# purge was off); 100 is 1% (a round of a regular schedule). Expiries are
# a day or more from now, so that a client's time zone cannot change which
# rows are expired. Autovacuum is off for the table, so that no run is
# measured beside a vacuum of an earlier one.
make_template() {
    local name=$1 expired_every=$2
    sql postgres -c "CREATE DATABASE $name"
    DATABASE_URL="$server/$name" "$bin" migrate >/dev/null
    sql "$name" <<SQL
ALTER TABLE user_sessions SET (autovacuum_enabled = false);
INSERT INTO user_sessions (session_id, username, session_data, created_at, updated_at, expires_at, is_active)
SELECT md5(i::text), 'user-' || (i % 50000),
       '{"user_id": ' || i || ', "cart": {"items": [1, 2, 3]}, "theme": "dark", "locale": "en-US", "csrf": "' || md5((i * 7)::text) || '"}',
       now() AT TIME ZONE 'UTC' - interval '40 days', now() AT TIME ZONE 'UTC' - interval '40 days',
       now() AT TIME ZONE 'UTC'
         + (CASE WHEN i % $expired_every = 0 THEN -1 ELSE 1 END) * (interval '1 day' + random() * interval '30 days'),
       true
FROM generate_series(1, $rows) AS i;
VACUUM ANALYZE user_sessions;
SQL
}

copy_of() {
    sql postgres -c "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2 TEMPLATE $1 STRATEGY FILE_COPY"
    sql "$2" -c "SELECT count(*) FROM user_sessions" >/dev/null
}

# Single-row updates of active (odd-numbered) sessions, as the webhook's.
cat >"$work/update.sql" <<'SQL'
\set id 2 * random(0, :rows / 2 - 1) + 1
UPDATE user_sessions SET session_data = '{"subscribed": true, "subscription_status": "active"}',
       updated_at = now() AT TIME ZONE 'UTC'
WHERE id = :id AND is_active AND expires_at > now() AT TIME ZONE 'UTC';
SQL

# The web app's read of one session, by its session_id (any session).
cat >"$work/select.sql" <<'SQL'
\set id random(1, :rows)
SELECT session_data, expires_at FROM user_sessions WHERE session_id = md5(:id::text);
SQL

# pgbench's per-transaction log: latency (µs, from the scheduled start) and
# completion time of every update.
start_updates() { # db log-prefix seconds
    pgbench -n -f "$work/update.sql" -D rows="$rows" -c 4 -j 1 -R "$rate" -T "$3" \
        -l --log-prefix="$work/$2" "$server/$1" >"$work/$2.out" 2>&1 &
    updates=$!
}
stop_updates() {
    # SIGTERM: a background job of a script ignores SIGINT.
    kill -TERM "$updates" 2>/dev/null || true
    wait "$updates" 2>/dev/null || true
}

results="$work/results"
: >"$results"
record() { echo "$*" >>"$results"; }

# The purge (as the `purge` command, with the flags after $2) on db $1,
# timed batch by batch; the updates' latencies while it ran go to $2.
measure_purge() {
    local db=$1 tag=$2 t0 t1 c0 c1
    shift 2
    sleep 2
    c0=$(checkpoints)
    t0=$(now)
    DATABASE_URL="$server/$db" PURGE_BATCH_SIZE="$batch_size" LOG_FORMAT=json \
        RUST_LOG=session_worker=debug "$bin" purge "$@" >"$work/$tag.purge.log"
    t1=$(now)
    c1=$(checkpoints)
    sleep 1
    python3 - "$work/$tag.purge.log" "$t0" "$t1" "$tag" "$((c1 - c0))" >>"$results" <<'PY'
import json, re, statistics, sys
log, t0, t1, tag, checkpoints = sys.argv[1:]
lines = open(log).read().splitlines()
printed = next(l for l in lines if l.startswith("purged "))
purged, ms = map(int, re.fullmatch(r"purged (\d+) sessions in (\d+) ms", printed).groups())
logged = [json.loads(l) for l in lines if l.startswith("{")]
batches = [b["duration_us"] for b in logged if b.get("message") == "purge batch"] or [0]
mode = next((b["mode"] for b in logged if b.get("message") == "purge completed"), "?")
# Statements done again with SKIP LOCKED after meeting a held row.
held = sum(1 for b in logged if "is held" in b.get("message", ""))
print(f"{tag} purge_ms={ms} purged={purged} mode={mode} batches={len(batches)} held={held} longest_ms={max(batches) / 1000:.1f}"
      f" median_batch_ms={statistics.median(batches) / 1000:.1f} checkpoints={checkpoints} window={t0},{t1}")
PY
}

# Controls (no purge): how much any busy backend raises the updates' p99 on
# this machine. "busy" spins one backend on the CPU for 1 s and touches no
# table; "scan" reads the whole table 5 times (a count by expires_at with
# no index and no parallel workers: one backend, as the purge), which
# writes nothing and holds no row. They run on the copy the run's last
# variant purged (dead rows, not vacuumed); "p99/before" compares them with
# the same copy at the same moment.
measure_control() {
    local db=$1 tag=$2 kind=$3 t0 t1 statement
    case $kind in
    busy) statement="DO \$\$ DECLARE t timestamptz := clock_timestamp(); BEGIN
              WHILE clock_timestamp() < t + interval '1 s' LOOP END LOOP; END \$\$" ;;
    scan) statement="SET enable_indexscan = off; SET enable_bitmapscan = off;
              SET max_parallel_workers_per_gather = 0;
              SELECT count(*) FROM user_sessions WHERE expires_at < now();
              SELECT count(*) FROM user_sessions WHERE expires_at < now();
              SELECT count(*) FROM user_sessions WHERE expires_at < now();
              SELECT count(*) FROM user_sessions WHERE expires_at < now();
              SELECT count(*) FROM user_sessions WHERE expires_at < now()" ;;
    esac
    sleep 2
    t0=$(now)
    sql "$db" -c "$statement" >/dev/null
    t1=$(now)
    sleep 1
    record "$tag control_ms=$(python3 -c "print(round(($t1 - $t0) * 1000))") window=$t0,$t1"
}

# The webhook's update and the app's read for $3 seconds on db $1, with
# nothing else running; latencies go to $2.
measure_reads() {
    pgbench -n -f "$work/update.sql" -f "$work/select.sql" -D rows="$rows" -c 4 -j 1 -R "$rate" -T "$3" \
        -l --log-prefix="$work/$2" "$server/$1" >"$work/$2.out" 2>&1
    record "$2 window=0,9e99"
}

measure_delete() {
    local t0 t1 c0 c1 out
    sleep 2
    c0=$(checkpoints)
    t0=$(now)
    out=$(PGTZ=UTC psql -X "$server/$1" -c '\timing on' \
        -c "DELETE FROM user_sessions WHERE expires_at < now()")
    t1=$(now)
    c1=$(checkpoints)
    sleep 1
    record "$2 delete_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
        "deleted=$(sed -n 's/^DELETE \([0-9]*\)$/\1/p' <<<"$out") checkpoints=$((c1 - c0)) window=$t0,$t1"
}

say "loading $rows sessions (half expired)"
make_template bench_half 2
say "loading $rows sessions (1% expired)"
make_template bench_steady 100
uptime >"$work/load.before"

# The variants of the purge measured against the DELETE on a half-expired
# copy, each on a fresh copy: the modes without pacing, then the curve.
variants="ordinary skiplocked locktimeout"
for pace in $paces; do variants="$variants pace$pace"; done
variants=${BENCH_VARIANTS:-$variants}
flags_of() {
    case $1 in
    ordinary) echo "--mode ordinary --pause-ratio 0" ;;
    skiplocked) echo "--mode backlog --row-locks skip-locked --pause-ratio 0" ;;
    locktimeout) echo "--mode backlog --row-locks lock-timeout --pause-ratio 0" ;;
    pace*) echo "--mode backlog --row-locks lock-timeout --pause-ratio ${1#pace}" ;;
    esac
}

steady_flags_of() {
    case $1 in
    ordinaryskiplocked) echo "--mode ordinary --row-locks skip-locked" ;;
    *) echo "--mode $1" ;;
    esac
}

for run in $(seq 1 "$repeat"); do
    say "run $run/$repeat: half expired"
    copy_of bench_half bench_delete
    start_updates bench_delete "idle$run" "$idle_secs"
    wait "$updates"
    record "idle$run window=0,9e99"
    start_updates bench_delete "delete$run" 600
    measure_delete bench_delete "delete$run"
    stop_updates
    order=$(echo "$variants" | awk -v k="$((run - 1))" '{ for (i = 0; i < NF; i++) printf "%s ", $((i + k) % NF + 1) }')
    for variant in $order; do
        say "run $run/$repeat: purge $variant"
        copy_of bench_half bench_purge
        start_updates bench_purge "$variant$run" 600
        # shellcheck disable=SC2046
        measure_purge bench_purge "$variant$run" $(flags_of "$variant")
        stop_updates
    done

    for control in $controls; do
        say "run $run/$repeat: control $control (no purge)"
        start_updates bench_purge "control$control$run" 600
        measure_control bench_purge "control$control$run" "$control"
        stop_updates
    done

    if [ "$after" = 1 ]; then
        say "run $run/$repeat: after the purge (default settings), then after a VACUUM"
        copy_of bench_half bench_purge
        measure_reads bench_purge "before$run" "$after_secs"
        measure_purge bench_purge "auto$run"
        measure_reads bench_purge "after$run" "$after_secs"
        t0=$(now)
        sql bench_purge -c "VACUUM user_sessions"
        record "vacuum$run vacuum_ms=$(python3 -c "print(round(($(now) - $t0) * 1000))")"
        measure_reads bench_purge "vacuumed$run" "$after_secs"
    fi

    say "run $run/$repeat: 1% expired, no updates"
    for variant in $steady; do
        copy_of bench_steady bench_purge
        # shellcheck disable=SC2046
        measure_purge bench_purge "steady$variant$run" $(steady_flags_of "$variant")
    done
    copy_of bench_steady bench_delete
    measure_delete bench_delete "steadydelete$run"
done
uptime >"$work/load.after"
sql postgres -c "DROP DATABASE bench_purge" -c "DROP DATABASE bench_delete" \
    -c "DROP DATABASE bench_half" -c "DROP DATABASE bench_steady"

python3 - "$work" "$results" "$rows" "$rate" "$batch_size" "$variants" "$steady" "$after" "$controls" <<'PY'
import glob, statistics, sys
work, results, rows, rate, batch_size, variants, steady, after, controls = sys.argv[1:]
variants = variants.split()

def timed(prefix, window, script=None):
    """(completion time, latency ms) of the transactions of pgbench's log
    `prefix` that finished in the window (of `script` only, when given)."""
    lo, hi = map(float, window.split(","))
    found = []
    for path in glob.glob(f"{work}/{prefix}.*"):
        if path.endswith(".out") or path.endswith(".log"):
            continue
        for line in open(path):
            f = line.split()
            # client_id transaction_no time script_no time_epoch time_us [lag];
            # the last line may be cut short where pgbench was stopped.
            if len(f) < 6 or (script is not None and int(f[3]) != script):
                continue
            done = int(f[4]) + int(f[5]) / 1e6
            if lo <= done <= hi:
                found.append((done, int(f[2]) / 1000))
    return sorted(found)

def latencies(prefix, window, script=None):
    """The latencies (ms) of `timed`, sorted."""
    return sorted(latency for _, latency in timed(prefix, window, script))

def p99_before(prefix, window):
    """The p99 of the updates that finished in the 1.5 s before the purge began:
    the same database, the same moment of the run, the same updates."""
    lo = float(window.split(",")[0])
    return pct([latency for _, latency in timed(prefix, f"{lo - 1.5},{lo}")], 0.99)

def pct(values, q):
    return values[int(q * (len(values) - 1))] if values else float("nan")

runs = {}
for line in open(results):
    tag, *fields = line.split()
    runs[tag] = dict(f.split("=", 1) for f in fields)

def med(values):
    return statistics.median(values)

repeat = len([t for t in runs if t.startswith("idle")])
print(f"rows={rows} update_rate={rate}/s batch_size={batch_size} runs={repeat}")
print(f"load before: {open(work + '/load.before').read().strip()}")
print(f"load after:  {open(work + '/load.after').read().strip()}")
print()
print("Half expired, updates running. Per variant, the median over the runs of: the purge's time, its ratio")
print("to the DELETE of the same run, its longest statement (and the longest of all runs), how many updates")
print("finished during it, their p99 and its ratio to the same run's idle p99: of the whole idle phase, and")
print("(p99/before) of the 1.5 s of updates just before the purge began. Per-run figures follow.")
print()
print("| variant | purge ms | purge/DELETE | statements | longest statement ms | longest of all runs ms | updates | p99 ms | p99/idle | p99/before |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
idle = {r: pct(latencies(f"idle{r}", runs[f"idle{r}"]["window"]), 0.99) for r in range(1, repeat + 1)}
delete = {r: float(runs[f"delete{r}"]["delete_ms"]) for r in range(1, repeat + 1)}
delete_lat = {r: latencies(f"delete{r}", runs[f"delete{r}"]["window"]) for r in range(1, repeat + 1)}
delete_p99 = {r: pct(delete_lat[r], 0.99) for r in range(1, repeat + 1)}
delete_before = {r: delete_p99[r] / p99_before(f"delete{r}", runs[f"delete{r}"]["window"]) for r in idle}
print(f"| single DELETE | {med(delete.values()):.0f} | 1.00x | 1 | {med(delete.values()):.0f} | {max(delete.values()):.0f}"
      f" | {med([len(l) for l in delete_lat.values()]):.0f}"
      f" | {med(delete_p99.values()):.2f} | {med([delete_p99[r] / idle[r] for r in idle]):.2f}x"
      f" | {med(delete_before.values()):.2f}x |")
longest_purge = (0.0, None)
per_run = []
for v in variants:
    rows_v = []
    for r in range(1, repeat + 1):
        p = runs[f"{v}{r}"]
        assert p["purged"] == runs[f"delete{r}"]["deleted"], (v, r, p, runs[f"delete{r}"])
        during = latencies(f"{v}{r}", p["window"])
        p99 = pct(during, 0.99)
        before = p99_before(f"{v}{r}", p["window"])
        rows_v.append((int(p["purge_ms"]), int(p["purge_ms"]) / delete[r], int(p["batches"]),
                       float(p["longest_ms"]), p99, p99 / idle[r], len(during), p99 / before))
        longest_purge = max(longest_purge, (float(p["longest_ms"]), f"{v}, run {r}"))
        per_run.append(f"| {v} | {r} | {p['mode']} | {p['purge_ms']} | {delete[r]:.0f} | {rows_v[-1][1]:.2f}x"
                       f" | {p['batches']} | {p['held']} | {p['longest_ms']} | {len(during)} | {idle[r]:.2f} | {before:.2f} | {p99:.2f}"
                       f" | {rows_v[-1][5]:.2f}x | {rows_v[-1][7]:.2f}x |")
    m = [med([x[k] for x in rows_v]) for k in range(8)]
    print(f"| {v} | {m[0]:.0f} | {m[1]:.2f}x | {m[2]:.0f} | {m[3]:.1f} | {max(x[3] for x in rows_v):.1f}"
          f" | {m[6]:.0f} | {m[4]:.2f} | {m[5]:.2f}x | {m[7]:.2f}x |")
for c in controls.split():
    got = []
    for r in range(1, repeat + 1):
        p = runs[f"control{c}{r}"]
        during = latencies(f"control{c}{r}", p["window"])
        got.append((int(p["control_ms"]), len(during), pct(during, 0.99), pct(during, 0.99) / idle[r],
                    pct(during, 0.99) / p99_before(f"control{c}{r}", p["window"])))
        per_run.append(f"| control {c} | {r} | | {p['control_ms']} | {delete[r]:.0f} | | | | | {got[-1][1]}"
                       f" | {idle[r]:.2f} | {got[-1][2] / got[-1][4]:.2f} | {got[-1][2]:.2f} | {got[-1][3]:.2f}x | {got[-1][4]:.2f}x |")
    m = [med([x[k] for x in got]) for k in range(5)]
    print(f"| control, no purge: {c} | {m[0]:.0f} | | | | | {m[1]:.0f} | {m[2]:.2f} | {m[3]:.2f}x | {m[4]:.2f}x |")
print()
print(f"The longest statement of any purge, any variant, any run: {longest_purge[0]:.1f} ms ({longest_purge[1]}).")
print()
print("| variant | run | mode | purge ms | DELETE ms | purge/DELETE | statements | held | longest ms | updates | p99 idle ms | p99 before ms | p99 purge ms | p99/idle | p99/before |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
print("\n".join(per_run))
if after == "1":
    print()
    print("After the purge (default settings, auto mode): p50 / p99 ms of the webhook's update and the app's read")
    print("by session_id, before the purge, right after it, and after a VACUUM (medians over the runs).")
    print()
    print("| when | update p50 | update p99 | read p50 | read p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for when in ["before", "after", "vacuumed"]:
        cells = []
        for script in (0, 1):
            got = [latencies(f"{when}{r}", "0,9e99", script) for r in range(1, repeat + 1)]
            cells += [med([pct(g, 0.5) for g in got]), med([pct(g, 0.99) for g in got])]
        print(f"| {when} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    auto = [runs[f"auto{r}"] for r in range(1, repeat + 1)]
    print(f"(auto purge: mode {auto[0]['mode']}, median {med([int(a['purge_ms']) for a in auto]):.0f} ms;"
          f" VACUUM median {med([int(runs[f'vacuum{r}']['vacuum_ms']) for r in range(1, repeat + 1)]):.0f} ms)")
print()
print("1% expired, no updates (medians; ratio per run to that run's DELETE):")
print("| variant | mode | purge ms | statements | longest statement ms | longest of all runs ms | DELETE ms | purge/DELETE | per run |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for v in steady.split():
    got = [(runs[f"steady{v}{r}"], float(runs[f"steadydelete{r}"]["delete_ms"])) for r in range(1, repeat + 1)]
    for p, d in got:
        assert p["purged"] == runs[f"steadydelete{got.index((p, d)) + 1}"]["deleted"], (v, p)
    print(f"| {v} | {got[0][0]['mode']} | {med([int(p['purge_ms']) for p, _ in got]):.0f}"
          f" | {med([int(p['batches']) for p, _ in got]):.0f} | {med([float(p['longest_ms']) for p, _ in got]):.1f}"
          f" | {max(float(p['longest_ms']) for p, _ in got):.1f}"
          f" | {med([d for _, d in got]):.0f} | {med([int(p['purge_ms']) / d for p, d in got]):.2f}x"
          f" | {', '.join(format(int(p['purge_ms']) / d, '.2f') for p, d in got)} |")
PY
