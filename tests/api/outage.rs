//! A database that goes away and comes back: 503 within 5 s, nothing lost.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::cable::{Cable, server_of};
use crate::helpers::*;

/// How long a connection may sit idle and still be reused unchecked
/// (`CHECK_AFTER_IDLE` in src/store/connections.rs).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The database goes away under a live connection: the webhook answers 503
/// within 5 s and records nothing, whichever way the connection is found
/// dead; the retry after the outage applies once.
#[sqlx::test]
async fn an_outage_answers_503_quickly_and_the_retry_applies(pool: PgPool) {
    add_session(&pool, "s", "rita", Some("{}"), 60, true).await;
    let direct = (*pool.connect_options()).clone();
    let mut cable = Cable::to(server_of(&pool)).await;
    let through_cable =
        session_worker::store::pool_with(direct.host("127.0.0.1").port(cable.address.port()), 4);
    let app = app(through_cable);
    let event = subscription(
        "evt_outage",
        "updated",
        now(),
        "sub_r",
        "cus_r",
        "active",
        Some("rita"),
    );
    let mut warm_ups = 0;
    let mut warm = async || {
        warm_ups += 1;
        let warm_up = checkout(
            &format!("evt_warm_{warm_ups}"),
            now(),
            "someone",
            "cus_w",
            None,
        );
        assert_eq!(outcome(&app, &warm_up).await, "applied");
    };

    // Used within the second: reused unchecked, its statement fails, and the
    // one more try on a new connection is refused. A run slower than that
    // (a loaded machine) would check the connection first: not counted.
    run_within(CHECK_AFTER_IDLE, "warm, cut, deliver", async || {
        cable.restore().await;
        warm().await;
        cable.cut().await;
        expect_503_and_nothing_recorded(&pool, &app, &event).await;
    })
    .await;

    // Idle for longer: the check before use finds it dead.
    cable.restore().await;
    warm().await;
    tokio::time::sleep(CHECK_AFTER_IDLE + Duration::from_millis(100)).await;
    cable.cut().await;
    expect_503_and_nothing_recorded(&pool, &app, &event).await;

    cable.restore().await;
    // Stripe's retry: the same event, signed again.
    assert_eq!(outcome(&app, &event).await, "applied");
    assert_eq!(session(&pool, "s").await["subscribed"], true);
    assert_eq!(outcome(&app, &event).await, "duplicate");
}

async fn expect_503_and_nothing_recorded(pool: &PgPool, app: &axum::Router, event: &Value) {
    let started = Instant::now();
    let (status, body) = deliver(app, event).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The contract's bound: every wait on the way is capped below it
    // (ACQUIRE_TIMEOUT), and a refusal takes milliseconds.
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("database unavailable")
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM sw_events WHERE event_id = $1")
        .bind(event["id"].as_str().unwrap())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        recorded, 0,
        "nothing is recorded while the database is away"
    );
    assert_eq!(raw_session(pool, "s").await.as_deref(), Some("{}"));
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
    // Ended right after its last use: no check, the error, a new connection.
    // A run slower than the check interval (a loaded machine) would take the
    // other path (below): not counted.
    let mut runs = 0;
    let event = run_within(CHECK_AFTER_IDLE, "use, end, use", async || {
        runs += 1;
        let used = update(&format!("evt_1_{runs}"), "active");
        assert_eq!(outcome(&app, &used).await, "applied");
        end_other_connections(&pool).await;
        let event = update(&format!("evt_2_{runs}"), "past_due");
        assert_eq!(outcome(&app, &event).await, "applied");
        event
    })
    .await;
    assert_eq!(session(&pool, "s").await["subscription_status"], "past_due");
    assert_eq!(outcome(&app, &event).await, "duplicate");

    // Ended while idle for longer: the check finds it out before use.
    end_other_connections(&pool).await;
    tokio::time::sleep(CHECK_AFTER_IDLE + Duration::from_millis(100)).await;
    assert_eq!(outcome(&app, &update("evt_3", "active")).await, "applied");
    assert_eq!(session(&pool, "s").await["subscription_status"], "active");
}

/// A body that arrives whole only after `wait`, as from a slow network.
struct Late {
    wait: std::pin::Pin<Box<tokio::time::Sleep>>,
    bytes: Option<bytes::Bytes>,
}

impl axum::body::HttpBody for Late {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::ready!(self.wait.as_mut().poll(cx));
        std::task::Poll::Ready(
            self.bytes
                .take()
                .map(|bytes| Ok(hyper::body::Frame::data(bytes))),
        )
    }
}

/// The 5 s within which a 503 comes count from the request, not from the
/// end of its body: a body that took 2 s leaves 2.5 s for the database.
#[sqlx::test]
async fn the_deadline_counts_from_the_request_not_from_its_body(pool: PgPool) {
    use tower::ServiceExt;

    let app = app(pool.clone());
    // The database "unavailable": every statement on the events waits.
    let mut lock = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sw_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let body = serde_json::to_vec(&checkout("evt_slow", now(), "sam", "cus_s", None)).unwrap();
    let request = axum::http::Request::post("/webhooks/stripe")
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            session_worker::signature::sign(SECRET, now(), &body),
        )
        .body(axum::body::Body::new(Late {
            wait: Box::pin(tokio::time::sleep(Duration::from_secs(2))),
            bytes: Some(body.into()),
        }))
        .unwrap();
    let started = Instant::now();
    let response = app.oneshot(request).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut *lock).await.unwrap();
}
