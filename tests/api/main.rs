//! Integration tests against a real PostgreSQL: every `#[sqlx::test]` gets a
//! fresh database, with the migrations applied, on the server DATABASE_URL
//! names (scripts/test.sh starts a throwaway one).

mod concurrency;
mod helpers;
mod migrations;
mod ordering;
mod outage;
mod process;
mod purge;
mod purge_schedule;
mod sessions;
mod webhook;
