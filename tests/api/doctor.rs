//! `session-worker doctor`: exit 0 on a sound deployment; on each fault,
//! exit 1 and a FAIL line that names it and says what to do.

use sqlx::PgPool;

use crate::fake_stripe::{API_KEY, FakeStripe};
use crate::operator::{Run, db, run};

/// A signing secret of Stripe's form.
const WEBHOOK_SECRET: &str = "whsec_5aJ0sHjCk2pQw8ZxY1r7Lm3Nb6Vt9Ud4";

async fn doctor(pool: &PgPool, extra: &[(&str, &str)]) -> Run {
    let url = db(pool);
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    env.extend(extra.iter().copied());
    run(&["doctor"], &env).await
}

/// The one FAIL line about `subject`.
fn failure<'a>(run: &'a Run, subject: &str) -> &'a str {
    assert_eq!(run.code, 1, "{run}");
    let lines = run.lines_starting(&format!("FAIL {subject}:"));
    assert_eq!(lines.len(), 1, "no single FAIL line for {subject}: {run}");
    lines[0]
}

#[sqlx::test]
async fn a_sound_database_passes_every_check(pool: PgPool) {
    let run = doctor(&pool, &[]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.lines_starting("FAIL").is_empty(), "{run}");
    for subject in [
        "STRIPE_WEBHOOK_SECRET",
        "database",
        "user_sessions",
        "migrations",
        "indexes",
        "privileges",
        "time zones",
        "Stripe API",
    ] {
        assert_eq!(
            run.lines_starting(&format!("ok   {subject}:")).len(),
            1,
            "{subject}: {run}"
        );
    }
    assert!(!run.stdout.contains(&WEBHOOK_SECRET[6..]), "{run}");
}

/// Sessions created "hours from now" in UTC are the mark of a web app that
/// writes local time ahead of UTC: named, with what to do.
#[sqlx::test]
async fn sessions_written_in_local_time_are_named(pool: PgPool) {
    sqlx::raw_sql(
        "INSERT INTO user_sessions (session_id, username, created_at, expires_at) \
         VALUES ('tokyo', 'x', (now() AT TIME ZONE 'UTC') + interval '9 hours', \
                 (now() AT TIME ZONE 'UTC') + interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let run = doctor(&pool, &[]).await;

    assert!(
        failure(&run, "time zones").contains("writes local time"),
        "{run}"
    );
}

/// A creation date the app set on purpose far ahead (`'infinity'`, a year
/// no clock reads) is no time zone: the check passes.
#[sqlx::test]
async fn sessions_created_far_ahead_on_purpose_are_not_taken_for_local_time(pool: PgPool) {
    sqlx::raw_sql(
        "INSERT INTO user_sessions (session_id, username, created_at, expires_at) VALUES \
           ('endless', 'x', 'infinity', 'infinity'), \
           ('far-off', 'x', timestamp '290000-01-01', 'infinity'), \
           ('next-week', 'x', (now() AT TIME ZONE 'UTC') + interval '7 days', 'infinity')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let run = doctor(&pool, &[]).await;

    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.lines_starting("ok   time zones:").len(), 1, "{run}");
}

#[sqlx::test]
async fn a_dropped_index_is_named_with_the_statement_that_rebuilds_it(pool: PgPool) {
    sqlx::query("DROP INDEX user_sessions_expires_at_idx")
        .execute(&pool)
        .await
        .unwrap();
    let run = doctor(&pool, &[]).await;
    let line = failure(&run, "index user_sessions_expires_at_idx");
    assert!(line.contains("is missing"), "{line}");
    assert!(
        line.contains(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS user_sessions_expires_at_idx ON user_sessions (expires_at)"
        ),
        "{line}"
    );
    assert!(run.lines_starting("ok   indexes").is_empty(), "{run}");
}

#[sqlx::test]
async fn an_invalid_index_is_named_with_drop_and_rebuild(pool: PgPool) {
    // What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
    sqlx::query(
        "UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = 'user_sessions_username_idx'::regclass",
    )
    .execute(&pool)
    .await
    .unwrap();
    let run = doctor(&pool, &[]).await;
    let line = failure(&run, "index user_sessions_username_idx");
    assert!(line.contains("INVALID"), "{line}");
    assert!(
        line.contains("DROP INDEX CONCURRENTLY user_sessions_username_idx"),
        "{line}"
    );
}

#[sqlx::test]
async fn a_missing_column_of_user_sessions_is_named(pool: PgPool) {
    sqlx::query("ALTER TABLE user_sessions DROP COLUMN updated_at")
        .execute(&pool)
        .await
        .unwrap();
    let run = doctor(&pool, &[]).await;
    let line = failure(&run, "user_sessions");
    assert!(line.contains("has no column updated_at"), "{line}");
}

#[sqlx::test]
async fn a_pending_migration_says_to_migrate(pool: PgPool) {
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let run = doctor(&pool, &[]).await;
    let line = failure(&run, "migrations");
    assert!(line.contains("1 pending"), "{line}");
    assert!(line.contains("session-worker migrate"), "{line}");
}

#[sqlx::test]
async fn a_webhook_secret_of_the_wrong_form_fails_unseen(pool: PgPool) {
    let key = "sk_test_51TopSecretValue0123456789";
    let run = doctor(&pool, &[("STRIPE_WEBHOOK_SECRET", key)]).await;
    let line = failure(&run, "STRIPE_WEBHOOK_SECRET");
    assert!(line.contains("is an API key"), "{line}");
    assert!(line.contains("whsec_"), "{line}");
    assert!(!run.stdout.contains("TopSecretValue"), "{run}");
    // The database checks still ran and passed.
    assert_eq!(run.lines_starting("ok   indexes:").len(), 1, "{run}");
}

#[sqlx::test]
async fn a_key_is_tried_on_the_api_and_against_stripe_mode(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let base = stripe.base.clone();
    let with = |key: &'static str, mode: &'static str| {
        [
            ("STRIPE_SECRET_KEY", key),
            ("STRIPE_API_BASE", base.as_str()),
            ("STRIPE_MODE", mode),
        ]
    };

    let run = doctor(&pool, &with(API_KEY, "test")).await;
    assert_eq!(run.code, 0, "{run}");
    let line = run.lines_starting("ok   Stripe API:")[0];
    assert!(line.contains("test-mode key"), "{line}");
    assert_eq!(stripe.count("/v1/events"), 1);

    // The fake's key is a test key: STRIPE_MODE=live disagrees, before any call.
    let run = doctor(&pool, &with(API_KEY, "live")).await;
    assert_eq!(
        failure(&run, "STRIPE_MODE"),
        "FAIL STRIPE_MODE: is live but STRIPE_SECRET_KEY is a test-mode key; use a key of the same mode"
    );
    assert_eq!(stripe.count("/v1/events"), 1);

    // A key the API refuses.
    let run = doctor(&pool, &with("rk_test_notTheFakesKey", "any")).await;
    let line = failure(&run, "Stripe API");
    assert!(line.contains("did not accept the key"), "{line}");
    assert!(!run.stdout.contains("notTheFakesKey"), "{run}");
}
