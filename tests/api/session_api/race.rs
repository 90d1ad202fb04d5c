//! A session created while a webhook for its user is in flight, both ways
//! round: the new session ends with the webhook's state.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgPool};

use super::*;
use crate::helpers::{checkout, deliver, now, session};

/// The webhook's per-user lock (sw_apply_event).
const USER_LOCK: &str = "SELECT pg_advisory_xact_lock(1398210562, hashtext('alice'))";

/// Sessions of this test's database waiting for an advisory lock.
async fn lock_waiters(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks \
         WHERE locktype = 'advisory' AND NOT granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_session_created_during_a_webhook_gets_the_webhooks_state(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    // A webhook in flight: it holds alice's lock and has written her new
    // state, not yet committed.
    let mut webhook = pool.acquire().await.unwrap().detach();
    let mut tx = webhook.begin().await.unwrap();
    sqlx::query(USER_LOCK).execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO sw_subscriptions (subscription_id, username, customer_id, status, subscribed, \
                                       event_created, event_id) \
         VALUES ('sub_a', 'alice', 'cus_a', 'active', TRUE, now(), 'evt_a')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();

    let creating = tokio::spawn({
        let app = app.clone();
        async move { create(&app, "alice", json!({"cart": []})).await }
    });
    // The creation must wait for the webhook; if it does not, it ends first
    // (with the old state) and the assertion below fails.
    while lock_waiters(&pool).await == 0 && !creating.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();
    let id = creating.await.unwrap();
    let data = session(&pool, &id).await;
    assert_eq!(data["subscribed"], true, "{data}");
    assert_eq!(data["subscription_status"], "active");
}

#[sqlx::test]
async fn a_webhook_during_a_creation_updates_the_new_session(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    // A creation in flight: inserted, not yet committed.
    let mut creator = pool.acquire().await.unwrap().detach();
    let mut tx = creator.begin().await.unwrap();
    sqlx::query("SELECT * FROM sw_session_create('new-session', 'alice', '\"a\": 1', 3600, FALSE)")
        .execute(&mut *tx)
        .await
        .unwrap();

    let delivering = tokio::spawn({
        let app = app.clone();
        async move {
            deliver(
                &app,
                &checkout("evt_paid", now(), "alice", "cus_a", Some("sub_a")),
            )
            .await
        }
    });
    while lock_waiters(&pool).await == 0 && !delivering.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();
    let (status, body) = delivering.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "applied");
    let data = session(&pool, "new-session").await;
    assert_eq!(data["subscribed"], true, "{data}");
    assert_eq!(data["a"], 1);
}

#[sqlx::test]
async fn creations_and_webhooks_at_once_agree_in_the_end(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let creations: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { create(&app, "alice", json!({"i": i})).await })
        })
        .collect();
    let (status, _) = deliver(
        &app,
        &checkout("evt_paid", now(), "alice", "cus_a", Some("sub_a")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for creation in creations {
        let id = creation.await.unwrap();
        assert_eq!(session(&pool, &id).await["subscribed"], true);
    }
}
