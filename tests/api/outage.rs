//! A database that goes away and comes back: 503 within 5 s, nothing lost.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::cable::{Cable, server_of};
use crate::helpers::*;

#[sqlx::test]
async fn an_outage_answers_503_quickly_and_the_retry_applies(pool: PgPool) {
    add_session(&pool, "s", "rita", Some("{}"), 60, true).await;
    let direct = (*pool.connect_options()).clone();
    let mut cable = Cable::to(server_of(&pool)).await;
    let through_cable =
        session_worker::store::pool_with(direct.host("127.0.0.1").port(cable.address.port()), 4);
    let app = app(through_cable);

    // Warm the pool so the outage hits live connections too.
    assert_eq!(
        outcome(&app, &checkout("evt_warm", now(), "someone", "cus_w", None)).await,
        "applied"
    );

    cable.cut().await;
    let event = subscription(
        "evt_outage",
        "updated",
        now(),
        "sub_r",
        "cus_r",
        "active",
        Some("rita"),
    );
    let started = Instant::now();
    let (status, body) = deliver(&app, &event).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("database unavailable")
    );
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sw_events WHERE event_id = 'evt_outage'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded, 0,
        "nothing is recorded while the database is away"
    );
    assert_eq!(raw_session(&pool, "s").await.as_deref(), Some("{}"));

    cable.restore().await;
    // Stripe's retry: the same event, signed again.
    assert_eq!(outcome(&app, &event).await, "applied");
    assert_eq!(session(&pool, "s").await["subscribed"], true);
    assert_eq!(outcome(&app, &event).await, "duplicate");
}

/// Ends every other server process connected to this test's database (a
/// restart or a failover, as the worker sees it), and waits until they are gone.
async fn end_other_connections(pool: &PgPool) {
    // One connection throughout: the others may be among those ended.
    let mut own = pool.acquire().await.unwrap();
    // In the select list, the call runs only for the rows WHERE keeps.
    let ended: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *own)
    .await
    .unwrap();
    let ended: Vec<i32> = ended.into_iter().map(|(pid, _)| pid).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&ended)
                .fetch_one(&mut *own)
                .await
                .unwrap();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} server processes still there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The webhook path reuses a busy connection without a round trip to check
/// it. One the server ended is never the end of an event: found out by the
/// check it gets after a second idle, or by its error, after which the event
/// is applied once on a new connection.
#[sqlx::test]
async fn connections_the_server_ended_are_replaced(pool: PgPool) {
    add_session(&pool, "s", "kim", Some("{}"), 60, true).await;
    let app = app(pool.clone());
    let update = |id: &str, status: &str| {
        subscription(id, "updated", now(), "sub_k", "cus_k", status, Some("kim"))
    };
    assert_eq!(outcome(&app, &update("evt_1", "active")).await, "applied");

    // Ended right after its last use: no check, the error, a new connection.
    end_other_connections(&pool).await;
    let event = update("evt_2", "past_due");
    assert_eq!(outcome(&app, &event).await, "applied");
    assert_eq!(session(&pool, "s").await["subscription_status"], "past_due");
    assert_eq!(outcome(&app, &event).await, "duplicate");

    // Ended while idle for longer: the check finds it out before use.
    end_other_connections(&pool).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(outcome(&app, &update("evt_3", "active")).await, "applied");
    assert_eq!(session(&pool, "s").await["subscription_status"], "active");
}
