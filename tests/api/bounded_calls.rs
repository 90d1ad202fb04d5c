//! Calls on the serve path that are cut short (the webhook's deadline, a
//! caller that hangs up) close their connection instead of handing it back
//! to the pool: sqlx takes a connection back by pinging it with no time
//! limit, and a connection whose server is still busy with the old call (or
//! no longer answers) would keep its pool slot for as long as that lasts.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::*;
use session_worker::store::{self, SessionStore, Store};

/// Holds `lock` (SQL run in an open transaction) on a connection of its own
/// until dropped.
async fn hold(pool: &PgPool, lock: &str) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let mut holder = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut *holder).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock.to_owned()))
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// A one-connection pool of the worker's own kind, to the test's database.
fn worker_pool(pool: &PgPool) -> PgPool {
    store::pool_with((*pool.connect_options()).clone(), 1)
}

/// Runs `call` until it is blocked behind the held lock, cuts it short, and
/// checks that its connection leaves the pool while the lock is still held
/// (a connection handed back would wait there, pinged, behind the lock).
async fn cut_short<T>(worker: &PgPool, call: impl Future<Output = T>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err(),
        "the call should have been blocked by the lock"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while worker.size() > 0 {
        assert!(
            Instant::now() < deadline,
            "the cut-short call's connection went back to the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test]
async fn a_session_api_call_cut_short_closes_its_connection(pool: PgPool) {
    add_session(&pool, "s_bound", "bo", Some("{}"), 60, true).await;
    let worker = worker_pool(&pool);
    let sessions = SessionStore::new(worker.clone());
    let _lock = hold(
        &pool,
        "SELECT 1 FROM user_sessions WHERE session_id = 's_bound' FOR UPDATE",
    )
    .await;
    cut_short(&worker, sessions.end("s_bound")).await;
}

#[sqlx::test]
async fn a_wrong_mode_record_cut_short_closes_its_connection(pool: PgPool) {
    let worker = worker_pool(&pool);
    let store = Store::new(worker.clone(), vec!["active".into()]);
    let body = checkout("evt_bound", now(), "bo", "cus_b", None);
    let event = session_worker::event::parse(body.to_string().as_bytes(), "username").unwrap();
    let _lock = hold(&pool, "LOCK TABLE sw_events IN EXCLUSIVE MODE").await;
    cut_short(&worker, store.record_wrong_mode(&event)).await;
}
