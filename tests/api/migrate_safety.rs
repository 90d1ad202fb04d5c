//! Migrations on a live database: index builds that wait as long as they
//! must, never recorded over an invalid index, and two instances at once.

use std::time::{Duration, Instant};

use session_worker::store::{self, indexes::IndexState, indexes::concurrently_built};
use sqlx::{Connection, PgPool};

use crate::binary::{bare_command, database_url};

/// The web app's table, as it makes it, with `rows` sessions.
async fn web_app_table(pool: &PgPool, rows: i32) {
    sqlx::raw_sql(
        "CREATE TABLE user_sessions (
            id SERIAL PRIMARY KEY,
            session_id VARCHAR(64) UNIQUE NOT NULL,
            username VARCHAR(50) NOT NULL,
            session_data TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP NOT NULL,
            is_active BOOLEAN DEFAULT TRUE
        )",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, expires_at, is_active) \
         SELECT 'sid-' || i, 'user-' || (i % 1000), '{}', now() + make_interval(mins => i % 600 - 300), i % 7 <> 0 \
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
}

/// Every required index, and whether the catalog says it is valid.
async fn index_states(pool: &PgPool) -> Vec<(&'static str, IndexState)> {
    let mut conn = pool.acquire().await.unwrap();
    let mut states = Vec::new();
    for index in concurrently_built() {
        states.push((index.name, index.state(&mut conn).await.unwrap()));
    }
    states
}

fn all_valid() -> Vec<(&'static str, IndexState)> {
    concurrently_built()
        .map(|index| (index.name, IndexState::Valid))
        .collect()
}

/// A web-app transaction that wrote to `user_sessions` and stays open for
/// longer than the pool's 5 s statement timeout: the index builds wait for
/// it and end valid. Through a pool with the production settings
/// (statement timeout, application name).
#[sqlx::test(migrations = false)]
async fn a_long_web_app_transaction_delays_the_index_builds_without_breaking_them(pool: PgPool) {
    web_app_table(&pool, 20_000).await;
    let mut web_app = sqlx::PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; UPDATE user_sessions SET updated_at = now() WHERE id = 1")
        .execute(&mut web_app)
        .await
        .unwrap();

    let production = store::pool_with((*pool.connect_options()).clone(), 2);
    let migrating = tokio::spawn(async move { store::migrate(&production).await });

    // Held until an index build has waited for it past 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND query ILIKE '%CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(Instant::now() < deadline, "no index build waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert!(
        !migrating.is_finished(),
        "the build waits for the transaction"
    );
    sqlx::raw_sql("COMMIT").execute(&mut web_app).await.unwrap();

    tokio::time::timeout(Duration::from_secs(60), migrating)
        .await
        .expect("migrations end once the transaction does")
        .unwrap()
        .unwrap();
    assert_eq!(index_states(&pool).await, all_valid());
}

/// Two `session-worker migrate` processes started together on a table of
/// some hundred thousand rows: both succeed, every index valid.
#[sqlx::test(migrations = false)]
async fn two_instances_migrating_at_once_both_end_with_every_index_valid(pool: PgPool) {
    web_app_table(&pool, 300_000).await;
    let url = database_url(&pool, None);
    let start = || {
        let mut command = tokio::process::Command::from(bare_command());
        command
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("LOG_FORMAT", "text")
            .kill_on_drop(true)
            .output()
    };
    let (first, second) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(start(), start())
    })
    .await
    .expect("both end");
    for output in [first.unwrap(), second.unwrap()] {
        assert!(
            output.status.success(),
            "{:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(index_states(&pool).await, all_valid());
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE NOT success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, 0);
}

/// An index build interrupted before this version (cancelled by the old
/// statement timeout) left an invalid index, and its migration was recorded
/// as applied over it: the next `migrate` drops it and builds it again.
#[sqlx::test]
async fn an_invalid_index_left_by_an_interrupted_build_is_rebuilt(pool: PgPool) {
    sqlx::raw_sql("DROP INDEX user_sessions_username_idx")
        .execute(&pool)
        .await
        .unwrap();
    // A writer holds the build at its first wait; the build is cancelled
    // there, after its catalog entry was made.
    let mut writer = pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "BEGIN; INSERT INTO user_sessions (session_id, username, expires_at) \
         VALUES ('w', 'w', now())",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    let mut builder = pool.acquire().await.unwrap();
    sqlx::raw_sql("SET statement_timeout = '300ms'")
        .execute(&mut *builder)
        .await
        .unwrap();
    let cancelled = sqlx::raw_sql(
        "CREATE INDEX CONCURRENTLY user_sessions_username_idx ON user_sessions (username)",
    )
    .execute(&mut *builder)
    .await
    .unwrap_err();
    assert!(
        cancelled.to_string().contains("statement timeout"),
        "{cancelled}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *writer)
        .await
        .unwrap();
    drop((writer, builder));
    let states = index_states(&pool).await;
    assert_eq!(
        states[0],
        ("user_sessions_username_idx", IndexState::Invalid),
        "{states:?}"
    );

    store::migrate(&pool).await.unwrap();
    assert_eq!(index_states(&pool).await, all_valid());
}
