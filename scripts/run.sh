#!/usr/bin/env bash
# Runs `session-worker serve` from this checkout. Without DATABASE_URL it uses
# a throwaway local PostgreSQL (scripts/with-postgres.sh), removed on exit.
# Without STRIPE_WEBHOOK_SECRET it uses a local development secret, printed
# below, to sign test events with `session-worker sign`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${STRIPE_WEBHOOK_SECRET:-}" ]; then
    export STRIPE_WEBHOOK_SECRET=whsec_local_development
    echo "run: STRIPE_WEBHOOK_SECRET unset; using $STRIPE_WEBHOOK_SECRET (for local testing only)" >&2
fi
export LOG_FORMAT="${LOG_FORMAT:-text}"
cargo build --release --quiet
exec scripts/with-postgres.sh target/release/session-worker serve "$@"
