#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a PostgreSQL server.
#
# With DATABASE_URL already set, the command runs against that server as it is.
# Otherwise a throwaway cluster is made from this machine's PostgreSQL binaries
# (initdb in a temporary folder, a free port on 127.0.0.1), and stopped and
# removed when the command ends, however it ends.
#
# The throwaway server's TimeZone is deliberately not UTC (Pacific/Kiritimati,
# UTC+14), so that clients that keep the server's zone (psql, pgbench, many
# web-app drivers) see the same clock as a real non-UTC deployment. (sqlx asks
# for UTC itself; the time-zone tests set theirs explicitly.)
#
#   scripts/with-postgres.sh cargo test
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [ -n "${DATABASE_URL:-}" ]; then
    exec "$@"
fi

find_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /opt/homebrew/bin /usr/local/bin /usr/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return
        fi
    done
    return 1
}

if ! bindir=$(find_bindir); then
    cat >&2 <<'MSG'
with-postgres: no PostgreSQL server binaries (initdb, pg_ctl) found.
Install PostgreSQL 13 or newer, for example:
  Debian/Ubuntu:  sudo apt-get install postgresql
  macOS:          brew install postgresql@15
or set DATABASE_URL to a server you already have (the user needs CREATEDB for the tests).
MSG
    exit 1
fi

# PostgreSQL refuses to run as root: run the server as the postgres user then.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "with-postgres: running as root and there is no 'postgres' user to run the server as" >&2
        exit 1
    fi
    as_owner=(runuser -u postgres --)
fi

# Below Linux's ephemeral range (32768-60999): a port there can be taken at
# any moment by an outgoing connection or a listener on port 0 (tests start
# many). Another process can still take this one before the server binds it,
# so the start below tries again on another port.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "with-postgres: no free port found" >&2
    return 1
}

workdir=$(mktemp -d "${TMPDIR:-/tmp}/session-worker-pg.XXXXXX")
chmod 755 "$workdir"
datadir="$workdir/data"
mkdir -p "$datadir"
[ "${#as_owner[@]}" -eq 0 ] || chown -R postgres "$workdir"

stop_server() {
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

"${as_owner[@]}" "$bindir/initdb" -D "$datadir" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$workdir/initdb.log" 2>&1 || {
    cat "$workdir/initdb.log" >&2
    exit 1
}
cat >>"$datadir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$workdir'
max_connections = 300
timezone = 'Pacific/Kiritimati'
# A throwaway cluster: durability buys nothing here.
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
started=""
for _ in 1 2 3 4 5; do
    port=$(free_port)
    if "${as_owner[@]}" "$bindir/pg_ctl" -D "$datadir" -l "$workdir/server.log" -o "-p $port" -w -t 60 start >/dev/null; then
        started=yes
        break
    fi
done
if [ -z "$started" ]; then
    cat "$workdir/server.log" >&2
    exit 1
fi
# The port it got, for every later start too: a plain `pg_ctl start` (the
# soak's restarts after stopping the server) reads postgresql.conf, not the
# -o of the first start, and would come back on 5432.
echo "port = $port" >>"$datadir/postgresql.conf"

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
export PG_BINDIR="$bindir"
echo "with-postgres: throwaway PostgreSQL on 127.0.0.1:$port (stopped when the command ends)" >&2
"$@"
