//! Integration tests against a real PostgreSQL: every `#[sqlx::test]` gets a
//! fresh database, with the migrations applied, on the server DATABASE_URL
//! names (scripts/test.sh starts a throwaway one).

// serde_json's json! recurses once per key: a complete Stripe object needs more.
#![recursion_limit = "256"]

mod alerts;
mod binary;
mod blackhole;
mod bounded_calls;
mod cable;
mod concurrency;
mod docs;
mod doctor;
mod endpoint_settings;
mod events;
mod fake_stripe;
mod faults;
mod helpers;
mod hostile;
mod isolation;
mod migrate_safety;
mod migrations;
mod operations;
mod operator;
mod ordering;
mod outage;
mod ownership;
mod process;
mod purge;
mod purge_faults;
mod purge_modes;
mod purge_plan;
mod purge_schedule;
mod purge_windows;
mod reconcile;
mod reconcile_stream;
mod render;
mod replay;
mod rules;
mod session_api;
mod session_fast_path;
mod session_text;
mod sessions;
mod settings_at_start;
mod settlement;
mod stripe_limits;
mod subscription_object;
mod trigger;
mod webhook;
