#!/usr/bin/env bash
# Benchmark: `session-worker purge` against one big DELETE, on identical
# copies of a 1,000,000-session table, while a stream of single-row updates
# to active sessions (as the webhook makes them) runs beside it. See
# BENCHMARKS.md for what it measures and the figures.
#
#   scripts/bench-purge.sh
#
# Settings (environment): BENCH_ROWS (1000000), BENCH_REPEAT (5),
# BENCH_RATE (updates/s, 200), BENCH_IDLE_SECS (10), PURGE_BATCH_SIZE (5000).
# Without DATABASE_URL it runs on a throwaway server (scripts/with-postgres.sh);
# with one, it creates and drops databases named bench_* on that server.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BENCH_INSIDE:-}" ]; then
    cargo build --release --quiet
    exec env BENCH_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

rows=${BENCH_ROWS:-1000000}
repeat=${BENCH_REPEAT:-5}
rate=${BENCH_RATE:-200}
idle_secs=${BENCH_IDLE_SECS:-10}
batch_size=${PURGE_BATCH_SIZE:-5000}
[ -n "${PG_BINDIR:-}" ] && PATH="$PG_BINDIR:$PATH"
bin=target/release/session-worker
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

# The purge (as the `purge` command) on db $1, timed batch by batch; the
# updates' latencies while it ran go to $2.
measure_purge() {
    local t0 t1 c0 c1
    sleep 2
    c0=$(checkpoints)
    t0=$(now)
    DATABASE_URL="$server/$1" PURGE_BATCH_SIZE="$batch_size" LOG_FORMAT=json \
        RUST_LOG=session_worker=debug "$bin" purge >"$work/$1.purge.log"
    t1=$(now)
    c1=$(checkpoints)
    sleep 1
    python3 - "$work/$1.purge.log" "$t0" "$t1" "$2" "$((c1 - c0))" >>"$results" <<'PY'
import json, re, statistics, sys
log, t0, t1, tag, checkpoints = sys.argv[1:]
lines = open(log).read().splitlines()
printed = next(l for l in lines if l.startswith("purged "))
purged, ms = map(int, re.fullmatch(r"purged (\d+) sessions in (\d+) ms", printed).groups())
batches = [json.loads(l) for l in lines if l.startswith("{")]
batches = [b["duration_us"] for b in batches if b.get("message") == "purge batch"]
print(f"{tag} purge_ms={ms} purged={purged} batches={len(batches)} longest_ms={max(batches) / 1000:.1f}"
      f" median_batch_ms={statistics.median(batches) / 1000:.1f} checkpoints={checkpoints} window={t0},{t1}")
PY
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

for run in $(seq 1 "$repeat"); do
    say "run $run/$repeat: half expired"
    copy_of bench_half bench_purge
    copy_of bench_half bench_delete
    start_updates bench_purge "idle$run" "$idle_secs"
    wait "$updates"
    record "idle$run window=0,9e99"
    phases=(purge delete)
    [ $((run % 2)) -eq 0 ] && phases=(delete purge)
    for phase in "${phases[@]}"; do
        start_updates "bench_$phase" "$phase$run" 600
        "measure_$phase" "bench_$phase" "$phase$run"
        stop_updates
    done

    say "run $run/$repeat: 1% expired, no updates"
    copy_of bench_steady bench_purge
    copy_of bench_steady bench_delete
    measure_purge bench_purge "steadypurge$run"
    measure_delete bench_delete "steadydelete$run"
done
uptime >"$work/load.after"
sql postgres -c "DROP DATABASE bench_purge" -c "DROP DATABASE bench_delete" \
    -c "DROP DATABASE bench_half" -c "DROP DATABASE bench_steady"

python3 - "$work" "$results" "$rows" "$rate" "$batch_size" <<'PY'
import glob, statistics, sys
work, results, rows, rate, batch_size = sys.argv[1:]

def p99(prefix, window):
    lo, hi = map(float, window.split(","))
    latencies = []
    for path in glob.glob(f"{work}/{prefix}.*"):
        if path.endswith(".out"):
            continue
        for line in open(path):
            f = line.split()
            # client_id transaction_no time script_no time_epoch time_us [lag];
            # the last line may be cut short where pgbench was stopped.
            if len(f) < 6:
                continue
            done = int(f[4]) + int(f[5]) / 1e6
            if lo <= done <= hi:
                latencies.append(int(f[2]) / 1000)
    latencies.sort()
    if not latencies:
        return float("nan"), 0
    return latencies[int(0.99 * (len(latencies) - 1))], len(latencies)

runs = {}
for line in open(results):
    tag, *fields = line.split()
    values = dict(f.split("=", 1) for f in fields)
    if not tag.startswith("steady"):
        values["p99"], values["n"] = p99(tag, values["window"])
    runs[tag] = values

def med(values):
    return statistics.median(values)

repeat = len([t for t in runs if t.startswith("idle")])
print(f"rows={rows} update_rate={rate}/s batch_size={batch_size} runs={repeat}")
print(f"load before: {open(work + '/load.before').read().strip()}")
print(f"load after:  {open(work + '/load.after').read().strip()}")
print()
print("p99 columns: the updates' p99 latency, with the number of updates in the window in brackets;")
print("ckpt: checkpoints that began during the purge / during the DELETE.")
print()
print("| run | purge ms | purged | batches | rows/s | median batch ms | longest batch ms | DELETE ms | purge/DELETE | p99 idle ms | p99 purge ms | p99 DELETE ms | ckpt |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
table = []
for r in range(1, repeat + 1):
    p, d, i = runs[f"purge{r}"], runs[f"delete{r}"], runs[f"idle{r}"]
    assert p["purged"] == d["deleted"], (p, d)
    row = [int(p["purge_ms"]), int(p["purged"]), int(p["batches"]),
           int(p["purged"]) / (int(p["purge_ms"]) / 1000), float(p["median_batch_ms"]),
           float(p["longest_ms"]), float(d["delete_ms"]), int(p["purge_ms"]) / float(d["delete_ms"]),
           i["p99"], p["p99"], d["p99"]]
    table.append(row)
    print(f"| {r} | {row[0]} | {row[1]} | {row[2]} | {row[3]:.0f} | {row[4]:.1f} | {row[5]:.1f} | {row[6]:.0f}"
          f" | {row[7]:.1f}x | {row[8]:.2f} ({i['n']}) | {row[9]:.2f} ({p['n']}) | {row[10]:.2f} ({d['n']})"
          f" | {p['checkpoints']} / {d['checkpoints']} |")
m = [med([row[k] for row in table]) for k in range(11)]
print(f"| median | {m[0]:.0f} | {m[1]:.0f} | {m[2]:.0f} | {m[3]:.0f} | {m[4]:.1f} | {m[5]:.1f} | {m[6]:.0f}"
      f" | {m[7]:.1f}x | {m[8]:.2f} | {m[9]:.2f} | {m[10]:.2f} | |")
print(f"median of the per-run ratios: purge/DELETE {med([r[7] for r in table]):.1f}x,"
      f" p99 purge/idle {med([r[9] / r[8] for r in table]):.2f}x")
print()
print("1% expired, no updates:")
print("| run | purge ms | purged | batches | longest batch ms | DELETE ms | purge/DELETE |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
steady = []
for r in range(1, repeat + 1):
    p, d = runs[f"steadypurge{r}"], runs[f"steadydelete{r}"]
    assert p["purged"] == d["deleted"], (p, d)
    row = [int(p["purge_ms"]), int(p["purged"]), int(p["batches"]), float(p["longest_ms"]),
           float(d["delete_ms"]), int(p["purge_ms"]) / float(d["delete_ms"])]
    steady.append(row)
    print(f"| {r} | {row[0]} | {row[1]} | {row[2]} | {row[3]:.1f} | {row[4]:.0f} | {row[5]:.2f}x |")
m = [med([row[k] for row in steady]) for k in range(6)]
print(f"| median | {m[0]:.0f} | {m[1]:.0f} | {m[2]:.0f} | {m[3]:.1f} | {m[4]:.0f} | {m[5]:.2f}x |")
PY
