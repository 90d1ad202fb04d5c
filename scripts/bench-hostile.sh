#!/usr/bin/env bash
# The hostile-traffic benchmark (docs/hostile-traffic.md): the release
# binary against a throwaway PostgreSQL, attacked from examples/hostile.rs on
# loopback, one scenario after the other:
#
#   stalled  STALLED connections (400) each send a plausible webhook head and
#            1 MiB - 1 byte of body, then stall, for HOLD seconds (12)
#   idle     IDLE keep-alive connections (2,000) sit idle for 8 s
#   burst    BURST badly signed webhook calls (10,000) over 64 connections
#
# and, during each, a genuine signed webhook and a /healthz every 250 ms.
# Prints the server's peak resident memory, the genuine webhooks' answers and
# latencies, /healthz's, the recovery time, and the log lines written about
# rejected requests. Exits non-zero when a contract figure is missed.
#
#   scripts/bench-hostile.sh
#
# PROFILE=debug measures the debug build instead; SKIP_BUILD=1 uses what is
# built already.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
STALLED=${STALLED:-400}
HOLD=${HOLD:-12}
IDLE=${IDLE:-2000}
BURST=${BURST:-10000}
target_dir=${CARGO_TARGET_DIR:-target}

if [ -z "${BENCH_HOSTILE_INSIDE:-}" ]; then
    if [ -z "${SKIP_BUILD:-}" ]; then
        echo "== build ($PROFILE): session-worker, example hostile" >&2
        started=$(date +%s)
        cargo build --profile "$([ "$PROFILE" = debug ] && echo dev || echo "$PROFILE")" \
            --quiet --bin session-worker --example hostile
        echo "   built in $(($(date +%s) - started)) s" >&2
    fi
    # Always a throwaway server, never the one DATABASE_URL may name.
    exec env -u DATABASE_URL BENCH_HOSTILE_INSIDE=1 scripts/with-postgres.sh "$0" "$@"
fi

# --- inside scripts/with-postgres.sh: DATABASE_URL, PG_BINDIR are set ---------

bin="$target_dir/$PROFILE"
server=${DATABASE_URL%/*}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-hostile.XXXXXX")
secret="whsec_bench_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say() { echo "$*" >&2; }
fail() {
    echo "bench-hostile: FAILED: $*" >&2
    exit 1
}
# Each connection is a file descriptor, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE + 1000)) ] ||
    fail "ulimit -n is $(ulimit -n); IDLE=$IDLE needs more"

port=
for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done

PGOPTIONS='-c client_min_messages=warning' "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "CREATE DATABASE bench_hostile"

say "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
DATABASE_URL="$server/bench_hostile" STRIPE_WEBHOOK_SECRET="$secret" HOST=127.0.0.1 PORT="$port" \
    PURGE_SCHEDULE=off LOG_FORMAT=json "$bin/session-worker" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "serve exited"; }
    sleep 0.1
done
say "== session-worker serve (pid $serve_pid) on 127.0.0.1:$port; STALLED=$STALLED HOLD=$HOLD IDLE=$IDLE BURST=$BURST"

STRIPE_WEBHOOK_SECRET="$secret" timeout 600 "$bin/examples/hostile" --addr "127.0.0.1:$port" \
    --pid "$serve_pid" --stalled "$STALLED" --hold "$HOLD" --idle "$IDLE" --burst "$BURST" \
    | tee "$work/results.jsonl"

rejected_lines=$(grep -c '"webhook rejected' "$work/serve.log" || true)
busiest_second=$(grep '"webhook rejected' "$work/serve.log" | sed -n 's/.*"timestamp":"\([^".]*\).*/\1/p' |
    sort | uniq -c | sort -rn | head -1 | awk '{print $1}')
say "== log: $rejected_lines lines about rejected webhooks in all, at most ${busiest_second:-0} in one second"
say "== log lines of the run: $(wc -l <"$work/serve.log"), by message:"
sed -n 's/.*"message":"\([^":]*\).*/\1/p' "$work/serve.log" | sort | uniq -c | sort -rn | head -8 >&2

kill -0 "$serve_pid" 2>/dev/null || fail "the server died"
python3 - "$work/results.jsonl" <<'PY' || fail "a contract figure was missed (above)"
import json, sys
ok = True
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["scenario"] == "baseline":
        continue
    name = r["scenario"]
    def check(cond, what):
        global ok
        if not cond:
            ok = False
            print(f"{name}: {what}", file=sys.stderr)
    check(r["peak_rss_mib"] < 128, f"peak RSS {r['peak_rss_mib']} MiB >= 128")
    check(r["healthz"]["max_ms"] < 1000, f"/healthz took up to {r['healthz']['max_ms']} ms")
    w = r["genuine_webhooks"]
    check(w["max_ms"] < 6000, f"a genuine webhook took {w['max_ms']} ms")
    check(set(w["statuses"]) <= {"200", "503"}, f"genuine webhooks answered {w['statuses']}")
    check(r["recovery_ms"] is not None, "webhooks never answered 200 again")
sys.exit(0 if ok else 1)
PY
say "== all contract figures held"
