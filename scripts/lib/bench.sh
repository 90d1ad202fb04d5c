# Shared by the benchmark scripts that run inside scripts/with-postgres.sh
# (DATABASE_URL and PG_BINDIR set): `source scripts/lib/bench.sh NAME`.
# NAME prefixes failure messages. It makes a work folder ($work, removed on
# exit) and stops the `serve` whose pid is in $serve_pid on exit.

bench_name=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/$bench_name.XXXXXX")
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

sql() { PGOPTIONS='-c client_min_messages=warning' "$PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
say() { echo "$*" >&2; }
fail() {
    echo "$bench_name: FAILED: $*" >&2
    exit 1
}
# A field of a one-line JSON object, numbers only.
json_field() { sed -n "s/.*\"$2\":\([-0-9.e]*\).*/\1/p" "$1"; }

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    fail "no free port"
}

# Until `serve` on 127.0.0.1:PORT answers /readyz with 200 (10 s at most).
wait_ready() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 ') 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
}

# User and system clock ticks of a process.
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Of the whole PostgreSQL server: the postmaster, the children it has reaped
# (ended backends) and the children alive now.
postmaster=$(head -1 "$(sql "$DATABASE_URL" -c 'SHOW data_directory')/postmaster.pid")
pg_ticks() {
    local total child
    total=$(sed 's/.*) //' "/proc/$postmaster/stat" | awk '{print $12 + $13 + $14 + $15}')
    for child in $(pgrep -P "$postmaster"); do
        total=$((total + $(proc_ticks "$child" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
