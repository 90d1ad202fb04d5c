#!/usr/bin/env bash
# Runs every test against a real PostgreSQL: the one DATABASE_URL names, or a
# throwaway one started (and stopped) by scripts/with-postgres.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-postgres.sh cargo test --all-targets "$@"
