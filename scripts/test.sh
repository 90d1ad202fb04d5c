#!/usr/bin/env bash
# Runs every test against a real PostgreSQL: the one DATABASE_URL names, or a
# throwaway one started (and stopped) by scripts/with-postgres.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# Examples (the benchmark tools) are built by clippy --all-targets, not run:
# they hold no tests, and the last "test result" line stays the test suite's.
exec scripts/with-postgres.sh cargo test --lib --bins --tests "$@"
