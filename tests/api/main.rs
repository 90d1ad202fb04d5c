//! Integration tests against a real PostgreSQL: every `#[sqlx::test]` gets a
//! fresh database, with the migrations applied, on the server DATABASE_URL
//! names (scripts/test.sh starts a throwaway one).

// serde_json's json! recurses once per key: a complete Stripe object needs more.
#![recursion_limit = "256"]

mod binary;
mod cable;
mod concurrency;
mod fake_stripe;
mod helpers;
mod migrations;
mod operations;
mod ordering;
mod outage;
mod process;
mod purge;
mod purge_schedule;
mod reconcile;
mod render;
mod rules;
mod session_api;
mod sessions;
mod settlement;
mod webhook;
