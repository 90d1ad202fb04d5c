//! With `STRIPE_SECRET_KEY` set, the webhook settles with Stripe's API what
//! a payload cannot: invoices fetch their subscription, ties are settled by
//! the fetched object, and an API that fails answers 503 with nothing
//! recorded. Without a key, no call is made.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::binary::{Server, database_url};
use crate::fake_stripe::*;
use crate::helpers::*;

const PERIOD_END: i64 = 1_900_000_000;

/// An upper bound on "gave up in time" that a loaded machine cannot break
/// and an attempt or a budget not enforced cannot pass: far above the
/// webhook's 4.5 s (`Retry::WEBHOOK`, whose budget a unit test checks
/// against it) and far below the 30 s a slow answer of the fake takes.
/// Wall-clock figures belong to benchmarks, not to tests.
const WELL_BEFORE_A_SLOW_ANSWER: Duration = Duration::from_secs(15);
const SLOW: Duration = Duration::from_secs(30);

async fn recorded(pool: &PgPool, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sw_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn invoice_events_refresh_the_status_from_the_api(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_a", "cus_a", "past_due", None, PERIOD_END,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "ann", Some("{}"), 60, true).await;
    let t = now() - 100;

    let paid = checkout("evt_checkout", t, "ann", "cus_a", Some("sub_a"));
    assert_eq!(outcome(&app, &paid).await, "applied");
    assert_eq!(stripe.requests().len(), 0, "a checkout needs no API call");

    let failed = invoice_event("evt_failed", "payment_failed", t + 5, "sub_a", "cus_a");
    assert_eq!(outcome(&app, &failed).await, "applied");
    let data = session(&pool, "s").await;
    assert_eq!(data["subscribed"], false);
    assert_eq!(data["subscription_status"], "past_due");
    let period_end: Option<i64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM current_period_end)::bigint FROM sw_subscriptions \
         WHERE subscription_id = 'sub_a'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(period_end, Some(PERIOD_END));

    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/subscriptions/sub_a");
    assert_eq!(
        requests[0].stripe_version.as_deref(),
        Some(PINNED_VERSION),
        "async-stripe sends its pinned version"
    );

    // Stripe's retry of the same event: a duplicate, and no call.
    assert_eq!(outcome(&app, &failed).await, "duplicate");
    assert_eq!(stripe.requests().len(), 1);

    // The payment went through: the next invoice event reads `active`.
    stripe.set_subscription(subscription_object(
        "sub_a", "cus_a", "active", None, PERIOD_END,
    ));
    let paid = invoice_event("evt_paid", "paid", t + 9, "sub_a", "cus_a");
    assert_eq!(outcome(&app, &paid).await, "applied");
    assert_eq!(
        user_status(&pool, "ann").await,
        Some((true, Some("active".into())))
    );
}

#[sqlx::test]
async fn a_tie_is_settled_by_the_fetched_subscription(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_b",
        "cus_b",
        "active",
        Some("bea"),
        PERIOD_END,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "bea", Some("{}"), 60, true).await;
    let t = now() - 100;
    let update = |id: &str, created: i64, status: &str| {
        subscription(
            id,
            "updated",
            created,
            "sub_b",
            "cus_b",
            status,
            Some("bea"),
        )
    };

    assert_eq!(outcome(&app, &update("e1", t, "active")).await, "applied");
    assert_eq!(stripe.requests().len(), 0, "no recorded state, no tie");

    // Same second: by the payload the later delivery (past_due) would win;
    // the API says active, and that stands.
    assert_eq!(outcome(&app, &update("e2", t, "past_due")).await, "applied");
    assert_eq!(stripe.count("/v1/subscriptions/sub_b"), 1);
    assert_eq!(session(&pool, "s").await["subscription_status"], "active");
    let event_id: String =
        sqlx::query_scalar("SELECT event_id FROM sw_subscriptions WHERE subscription_id = 'sub_b'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(event_id, "e2");

    // A newer event is ordered by its payload alone: no call.
    assert_eq!(
        outcome(&app, &update("e3", t + 1, "past_due")).await,
        "applied"
    );
    assert_eq!(stripe.requests().len(), 1);
    assert_eq!(session(&pool, "s").await["subscription_status"], "past_due");
}

#[sqlx::test]
async fn an_api_failure_answers_503_and_a_later_delivery_applies(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_c", "cus_c", "active", None, PERIOD_END,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "cid", Some("{}"), 60, true).await;
    let t = now() - 100;
    let paid = checkout("evt_checkout", t, "cid", "cus_c", Some("sub_c"));
    assert_eq!(outcome(&app, &paid).await, "applied");

    stripe.trouble_always(Some(Trouble::ServerError));
    let invoice = invoice_event("evt_invoice", "paid", t + 5, "sub_c", "cus_c");
    let started = Instant::now();
    let (status, body) = deliver(&app, &invoice).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() < WELL_BEFORE_A_SLOW_ANSWER);
    assert_eq!(
        body["error"],
        "Stripe API unavailable; nothing was recorded, retry later"
    );
    assert_eq!(
        recorded(&pool, "evt_invoice").await,
        0,
        "nothing half applied"
    );
    assert_eq!(
        stripe.count("/v1/subscriptions/sub_c"),
        4,
        "Retry::WEBHOOK's attempts"
    );

    // Stripe delivers again later; the API is back.
    stripe.trouble_always(None);
    assert_eq!(outcome(&app, &invoice).await, "applied");
    assert_eq!(recorded(&pool, "evt_invoice").await, 1);
    assert_eq!(stripe.count("/v1/subscriptions/sub_c"), 5);
}

#[sqlx::test]
async fn rate_limits_and_slow_answers_are_retried_within_the_deadline(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_d",
        "cus_d",
        "unpaid",
        Some("dee"),
        PERIOD_END,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "dee", Some("{}"), 60, true).await;

    // 429 with Retry-After, then an answer slower than an attempt may take,
    // then a good one. Three requests: the slow one was given up on.
    stripe.trouble_next(&[Trouble::RateLimited, Trouble::Slow(SLOW)]);
    let invoice = invoice_event("evt_invoice", "payment_failed", now(), "sub_d", "cus_d");
    let started = Instant::now();
    assert_eq!(outcome(&app, &invoice).await, "applied");
    let took = started.elapsed();
    assert!(took < WELL_BEFORE_A_SLOW_ANSWER, "took {took:?}");
    assert_eq!(stripe.count("/v1/subscriptions/sub_d"), 3);
    assert_eq!(
        user_status(&pool, "dee").await,
        Some((false, Some("unpaid".into())))
    );
}

#[sqlx::test]
async fn an_api_that_never_answers_in_time_gets_503_before_the_deadline(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.trouble_always(Some(Trouble::Slow(SLOW)));
    let app = app_with_api(pool.clone(), stripe.client());
    let invoice = invoice_event("evt_invoice", "paid", now(), "sub_e", "cus_e");
    let started = Instant::now();
    let (status, body) = deliver(&app, &invoice).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < WELL_BEFORE_A_SLOW_ANSWER, "took {took:?}");
    // A lower bound: load only makes it later.
    assert!(
        took >= Duration::from_millis(2500),
        "gave up early: {took:?}"
    );
    assert_eq!(recorded(&pool, "evt_invoice").await, 0);
}

#[sqlx::test]
async fn a_subscription_the_api_does_not_know_leaves_the_payload(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let app = app_with_api(pool.clone(), stripe.client());
    let invoice = invoice_event("evt_invoice", "paid", now(), "sub_gone", "cus_f");
    assert_eq!(outcome(&app, &invoice).await, "ignored");
    assert_eq!(stripe.count("/v1/subscriptions/sub_gone"), 1);
    assert_eq!(recorded(&pool, "evt_invoice").await, 1);
}

/// The real binary: the settings reach the webhook; without a key, not one
/// call, even with STRIPE_API_BASE set.
#[sqlx::test]
async fn the_binary_calls_the_api_only_with_a_key(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_g",
        "cus_g",
        "active",
        Some("gus"),
        PERIOD_END,
    ));
    let t = now() - 100;
    let events = [
        subscription("e1", "updated", t, "sub_g", "cus_g", "active", Some("gus")),
        subscription(
            "e2",
            "updated",
            t,
            "sub_g",
            "cus_g",
            "past_due",
            Some("gus"),
        ),
        invoice_event("e3", "paid", t + 1, "sub_g", "cus_g"),
    ];

    let url = database_url(&pool, None);
    let mut without_key = Server::start(&url, &[("STRIPE_API_BASE", &stripe.base)]);
    without_key.wait_until("/readyz", 200).await;
    let outcomes: Vec<String> = {
        let mut outcomes = Vec::new();
        for event in &events {
            let (status, body) = without_key.deliver(event).await;
            assert_eq!(status, 200, "{body}");
            outcomes.push(body["outcome"].as_str().unwrap().to_owned());
        }
        outcomes
    };
    assert_eq!(outcomes, ["applied", "applied", "ignored"]);
    assert!(stripe.requests().is_empty(), "{:?}", stripe.requests());
    without_key.terminate();
    assert_eq!(without_key.wait().await.code(), Some(0));

    sqlx::query("TRUNCATE sw_events, sw_subscriptions, sw_customers")
        .execute(&pool)
        .await
        .unwrap();
    let mut with_key = Server::start(
        &url,
        &[
            ("STRIPE_API_BASE", &stripe.base),
            ("STRIPE_SECRET_KEY", API_KEY),
            ("RECONCILE_SCHEDULE", "0 0 * * * *"),
        ],
    );
    with_key.wait_until("/readyz", 200).await;
    for (event, expected) in events.iter().zip(["applied", "applied", "applied"]) {
        let (status, body) = with_key.deliver(event).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some(expected)));
    }
    // The tie (e2) and the invoice (e3) each read the subscription once.
    assert_eq!(stripe.count("/v1/subscriptions/sub_g"), 2);
    assert_eq!(
        user_status(&pool, "gus").await,
        Some((true, Some("active".into())))
    );
    with_key.terminate();
    assert_eq!(with_key.wait().await.code(), Some(0));
    let logs = with_key.logs();
    assert!(
        logs.iter().all(|line| !line.contains(API_KEY)),
        "the key is never logged"
    );
    assert!(
        logs.iter().any(|line| line.contains("schedule started")
            && line.contains("\"job\":\"reconcile\"")),
        "RECONCILE_SCHEDULE starts the reconcile schedule: {logs:?}"
    );
}

/// Compare and set: an invoice makes the worker ask the API about its
/// subscription; while that call is in flight, a newer event is recorded.
/// The answer, read before it, must not overwrite it.
#[sqlx::test]
async fn an_answer_read_before_a_newer_event_does_not_overwrite_it(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_h", "cus_h", "active", None, PERIOD_END,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "hal", Some("{}"), 60, true).await;
    let t = now() - 100;
    let paid = checkout("e1", t, "hal", "cus_h", Some("sub_h"));
    assert_eq!(outcome(&app, &paid).await, "applied");

    stripe.hold();
    let invoice = invoice_event("e2", "paid", t + 5, "sub_h", "cus_h");
    let in_flight = tokio::spawn({
        let app = app.clone();
        async move { outcome(&app, &invoice).await }
    });
    let asked = Instant::now();
    while stripe.count("/v1/subscriptions/sub_h") == 0 {
        assert!(asked.elapsed() < Duration::from_secs(10), "never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let newer = subscription("e3", "updated", t + 10, "sub_h", "cus_h", "past_due", None);
    assert_eq!(outcome(&app, &newer).await, "applied");
    stripe.release();

    // The invoice's own payload says no status: nothing more to do.
    assert_eq!(in_flight.await.unwrap(), "ignored");
    assert_eq!(session(&pool, "s").await["subscription_status"], "past_due");
    assert_eq!(
        user_status(&pool, "hal").await,
        Some((false, Some("past_due".into())))
    );
    let event_id: String =
        sqlx::query_scalar("SELECT event_id FROM sw_subscriptions WHERE subscription_id = 'sub_h'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(event_id, "e3");
}
