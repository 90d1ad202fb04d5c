//! A database whose connections silently stop answering (a partition
//! without a reset): seconds lost, not the instance.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::blackhole::Blackhole;
use crate::cable::server_of;
use crate::helpers::*;
use session_worker::http::router;
use session_worker::store::{self, Store};

/// The app with its connections going through `hole`, as in production
/// (statement timeout, application name, keepalive options).
fn app_through(pool: &PgPool, hole: &Blackhole, webhook_connections: u32) -> Router {
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(hole.address.port());
    let through = store::pool_with(options, 3);
    let mut state = state(through.clone());
    state.store = Store::new(through, vec!["active".into(), "trialing".into()])
        .with_webhook_connections(webhook_connections);
    router(state)
}

async fn readyz(app: &Router) -> StatusCode {
    app.clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[sqlx::test]
async fn a_database_that_stops_answering_costs_seconds_and_the_retry_applies_once(pool: PgPool) {
    add_session(&pool, "s", "rita", Some("{}"), 60, true).await;
    let hole = Blackhole::to(server_of(&pool)).await;
    let webhook_connections = 2;
    let app = app_through(&pool, &hole, webhook_connections);

    assert_eq!(readyz(&app).await, StatusCode::OK);
    // As many live webhook connections as there may be, just used: the
    // warm-up events wait together behind a lock on the table of events.
    let mut lock = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sw_events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let warm_ups: Vec<_> = (0..webhook_connections)
        .map(|i| {
            let app = app.clone();
            let warm = checkout(&format!("evt_warm{i}"), now(), "someone", "cus_w", None);
            tokio::spawn(async move { outcome(&app, &warm).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'session-worker' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == i64::from(webhook_connections) {
            break;
        }
        assert!(Instant::now() < deadline, "{waiting} warm-up(s) waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut *lock).await.unwrap();
    for warm_up in warm_ups {
        assert_eq!(warm_up.await.unwrap(), "applied");
    }

    hole.swallow();
    let event = subscription(
        "evt_partition",
        "updated",
        now(),
        "sub_r",
        "cus_r",
        "active",
        Some("rita"),
    );
    // At once, each on a connection just used (so not checked first): each
    // call gets stuck, and must not keep its connection for good.
    let stuck: Vec<_> = (0..webhook_connections)
        .map(|i| {
            let app = app.clone();
            let event = subscription(
                &format!("evt_stuck{i}"),
                "updated",
                now(),
                "sub_r",
                "cus_r",
                "active",
                Some("rita"),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let (status, _) = deliver(&app, &event).await;
                (status, started.elapsed())
            })
        })
        .collect();
    for call in stuck {
        let (status, waited) = call.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    }
    // And one after the other.
    for attempt in 0..2 {
        let started = Instant::now();
        let (status, body) = deliver(&app, &event).await;
        let waited = started.elapsed();
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: {body}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "attempt {attempt} answered after {waited:?}"
        );
    }
    let started = Instant::now();
    assert_eq!(readyz(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5));
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sw_events WHERE event_id = 'evt_partition'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, 0, "nothing reached the database");

    // Reachable again (new connections go through; the swallowed ones stay
    // silent for good): Stripe's retries apply it, with no restart.
    hole.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut outcomes = Vec::new();
    loop {
        let (status, body) = deliver(&app, &event).await;
        if status == StatusCode::OK {
            outcomes.push(body["outcome"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "the webhook still answers 503 20 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(outcomes, ["applied"]);
    assert_eq!(outcome(&app, &event).await, "duplicate");
    assert_eq!(session(&pool, "s").await["subscribed"], true);

    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&app).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "/readyz still 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Webhook connections idle past their time are closed by the store itself,
/// not only when a later event pops them.
#[sqlx::test]
async fn idle_webhook_connections_are_reaped(pool: PgPool) {
    let ours = store::pool_with((*pool.connect_options()).clone(), 3);
    let mut state = state(ours.clone());
    state.store = Store::new(ours, vec!["active".into()])
        .with_webhook_idle_timeout(Duration::from_millis(600));
    let app = router(state);
    assert_eq!(
        outcome(&app, &checkout("evt_1", now(), "ann", "cus_a", None)).await,
        "applied"
    );
    let open = || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'session-worker'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        open
    };
    assert_eq!(open().await, 1, "the event's connection, idle");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open().await > 0 {
        assert!(
            Instant::now() < deadline,
            "an idle connection outlived its idle time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM while the database has stopped answering, with a webhook and a
/// readiness check stuck on it: the process still exits in Render's 30 s.
#[sqlx::test]
async fn sigterm_exits_in_time_whatever_the_database_does(pool: PgPool) {
    let hole = Blackhole::to(server_of(&pool)).await;
    let url = crate::binary::database_url(&pool, Some(hole.address.port()));
    let mut server = crate::binary::Server::start(&url, &[]);
    server.wait_until("/readyz", 200).await;
    let warm = checkout("evt_warm", now(), "someone", "cus_w", None);
    assert_eq!(server.deliver(&warm).await.0, 200);

    hole.swallow();
    assert_eq!(server.get("/readyz").await.status().as_u16(), 503);
    let stuck = tokio::spawn(
        server
            .webhook(&checkout("evt_stuck", now(), "x", "cus_x", None))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    server.terminate();
    let status = server.wait().await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
    // The webhook in flight was answered (503: Stripe delivers again).
    if let Ok(Ok(response)) = stuck.await {
        assert_eq!(response.status().as_u16(), 503);
    }
}

/// A reconcile round whose connection stops answering mid-round ends as
/// failed within seconds; once the server has ended the unreachable
/// sessions (its keepalive does, taking the round's lock with them), the
/// next round runs and applies what the first could not.
#[sqlx::test]
async fn a_reconcile_round_stuck_on_a_silent_database_fails_and_the_next_one_runs(pool: PgPool) {
    use crate::fake_stripe::{FakeStripe, Trouble, subscription_object};
    use session_worker::reconcile::{self, RunOutcome};
    use session_worker::settle::Settler;
    use session_worker::store::RECONCILE_LOCK_KEY;
    use session_worker::stripe_api::Retry;
    use tokio_util::sync::CancellationToken;

    const QUICK: Retry = Retry {
        attempts: 2,
        attempt_timeout: Duration::from_secs(2),
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        budget: Duration::from_secs(5),
    };
    let stripe = FakeStripe::start().await;
    let t = now() - 600;
    stripe.add_event(checkout("evt_checkout", t, "ann", "cus_a", Some("sub_a")));
    // The same second: settled by fetching sub_a from the API.
    stripe.add_event(subscription(
        "evt_update",
        "updated",
        t,
        "sub_a",
        "cus_a",
        "past_due",
        Some("ann"),
    ));
    stripe.set_subscription(subscription_object(
        "sub_a",
        "cus_a",
        "past_due",
        Some("ann"),
        t + 2_592_000,
    ));
    // The listing as usual; the fetch slow, and the partition begins meanwhile.
    stripe.trouble_next(&[
        Trouble::Slow(Duration::ZERO),
        Trouble::Slow(Duration::from_millis(400)),
    ]);

    let hole = Blackhole::to(server_of(&pool)).await;
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(hole.address.port());
    let through = store::pool_with(options, 3);
    let settler = Settler::new(
        Store::new(through, vec!["active".into(), "trialing".into()]),
        Some(stripe.client()),
        "username".into(),
    );
    let round = tokio::spawn({
        let settler = settler.clone();
        async move {
            reconcile::run_once(
                &settler,
                reconcile::DEFAULT_SINCE,
                &QUICK,
                &CancellationToken::new(),
            )
            .await
        }
    });
    while stripe.count("/v1/subscriptions") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hole.swallow();
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(20), round)
        .await
        .expect("a stuck round ends")
        .unwrap();
    let error = first.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(error.so_far.applied, 1, "the checkout, before: {error}");

    hole.server_ends_swallowed_sessions();
    hole.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE d.datname = current_database() AND l.locktype = 'advisory' \
             AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
        )
        .bind(RECONCILE_LOCK_KEY)
        .fetch_one(&pool)
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the lock outlived its session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = reconcile::run_once(
        &settler,
        reconcile::DEFAULT_SINCE,
        &QUICK,
        &CancellationToken::new(),
    )
    .await;
    match second {
        Ok(RunOutcome::Completed(report)) => {
            assert_eq!((report.applied, report.already_seen), (1, 1), "{report}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        user_status(&pool, "ann").await,
        Some((false, Some("past_due".into())))
    );
}

/// SIGTERM while a scheduled reconcile round is stuck on a connection that
/// stopped answering: the round is not waited for past the wind-down, and
/// the process exits in Render's 30 s.
#[sqlx::test]
async fn sigterm_exits_in_time_with_a_reconcile_round_stuck_on_the_database(pool: PgPool) {
    use crate::fake_stripe::{API_KEY, FakeStripe, Trouble, subscription_object};

    let stripe = FakeStripe::start().await;
    let t = now() - 600;
    stripe.add_event(checkout("evt_checkout", t, "ann", "cus_a", Some("sub_a")));
    stripe.add_event(subscription(
        "evt_update",
        "updated",
        t,
        "sub_a",
        "cus_a",
        "past_due",
        Some("ann"),
    ));
    stripe.set_subscription(subscription_object(
        "sub_a",
        "cus_a",
        "past_due",
        Some("ann"),
        t + 2_592_000,
    ));
    stripe.trouble_next(&[
        Trouble::Slow(Duration::ZERO),
        Trouble::Slow(Duration::from_millis(400)),
    ]);
    let hole = Blackhole::to(server_of(&pool)).await;
    let url = crate::binary::database_url(&pool, Some(hole.address.port()));
    let mut server = crate::binary::Server::start(
        &url,
        &[
            ("STRIPE_SECRET_KEY", API_KEY),
            ("STRIPE_API_BASE", stripe.base.as_str()),
            ("RECONCILE_SCHEDULE", "* * * * * *"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stripe.count("/v1/subscriptions") == 0 {
        assert!(Instant::now() < deadline, "no reconcile round fetched");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The round's next call goes to a database that no longer answers.
    hole.swallow();
    tokio::time::sleep(Duration::from_millis(600)).await;

    let started = Instant::now();
    server.terminate();
    let status = server.wait().await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
}

/// The production connection settings, as the server sees them: its side
/// of each connection probes a silent worker, and ends its session (and
/// locks) within about a minute.
#[sqlx::test]
async fn production_connections_carry_their_limits_and_keepalive(pool: PgPool) {
    let ours = store::pool_with((*pool.connect_options()).clone(), 1);
    let mut shown = Vec::new();
    for setting in [
        "application_name",
        "statement_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
    ] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&ours)
            .await
            .unwrap();
        shown.push(value);
    }
    assert_eq!(shown, ["session-worker", "5s", "30", "10", "3"]);
}
