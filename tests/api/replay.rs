//! `session-worker replay`: events fetched from Stripe's API (the fake) and
//! applied again through the webhook's path, under the ordering rules.

use serde_json::json;
use sqlx::PgPool;

use crate::fake_stripe::{API_KEY, FakeStripe, subscription_object};
use crate::helpers::{add_session, app, checkout, now, outcome, session, subscription};
use crate::operator::{Run, db, run};

async fn replay(pool: &PgPool, stripe: &FakeStripe, ids: &[&str], extra: &[(&str, &str)]) -> Run {
    let url = db(pool);
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_SECRET_KEY", API_KEY),
        ("STRIPE_API_BASE", stripe.base.as_str()),
    ];
    env.extend(extra.iter().copied());
    let mut args = vec!["replay"];
    args.extend(ids);
    run(&args, &env).await
}

async fn recorded_outcome(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT outcome FROM sw_events WHERE event_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn an_unknown_user_event_applies_once_its_mapping_is_fixed(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    add_session(&pool, "s_ann", "ann", Some(r#"{"cart": 1}"#), 60, true).await;
    // The app sets metadata.user, the worker looks for metadata.username.
    let mut event = subscription("evt_u1", "created", now(), "sub_u", "cus_u", "active", None);
    event["data"]["object"]["metadata"] = json!({ "user": "ann" });
    assert_eq!(outcome(&app(pool.clone()), &event).await, "unknown_user");
    assert_eq!(session(&pool, "s_ann").await, json!({ "cart": 1 }));
    stripe.add_event(event);
    stripe.set_subscription(subscription_object(
        "sub_u",
        "cus_u",
        "active",
        None,
        now() + 86_400,
    ));

    // USERNAME_METADATA_KEY fixed, the event replayed.
    let run = replay(
        &pool,
        &stripe,
        &["evt_u1"],
        &[("USERNAME_METADATA_KEY", "user")],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        run.stdout.trim(),
        "evt_u1 customer.subscription.created applied"
    );
    let data = session(&pool, "s_ann").await;
    assert_eq!(data["subscribed"], true, "{data}");
    assert_eq!(data["subscription_status"], "active", "{data}");
    assert_eq!(data["cart"], 1);
    assert_eq!(recorded_outcome(&pool, "evt_u1").await, "applied");
    assert_eq!(stripe.count("/v1/events/evt_u1"), 1);

    // Stripe's own retry of it afterwards is a duplicate.
    let app = app(pool.clone());
    let again = subscription("evt_u1", "created", now(), "sub_u", "cus_u", "active", None);
    assert_eq!(outcome(&app, &again).await, "duplicate");
}

#[sqlx::test]
async fn a_replayed_older_event_changes_nothing(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let app = app(pool.clone());
    add_session(&pool, "s_bea", "bea", None, 60, true).await;
    let t = now() - 100;
    let older = subscription(
        "evt_o2",
        "updated",
        t + 10,
        "sub_o",
        "cus_o",
        "active",
        None,
    );
    for (event, expected) in [
        (
            checkout("evt_o1", t, "bea", "cus_o", Some("sub_o")),
            "applied",
        ),
        (older.clone(), "applied"),
        (
            subscription(
                "evt_o3",
                "deleted",
                t + 20,
                "sub_o",
                "cus_o",
                "canceled",
                None,
            ),
            "applied",
        ),
    ] {
        assert_eq!(outcome(&app, &event).await, expected);
    }
    stripe.add_event(older);

    let run = replay(&pool, &stripe, &["evt_o2"], &[]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        run.stdout.trim(),
        "evt_o2 customer.subscription.updated stale"
    );
    let data = session(&pool, "s_bea").await;
    assert_eq!(data["subscribed"], false, "{data}");
    assert_eq!(data["subscription_status"], "canceled", "{data}");
    assert_eq!(recorded_outcome(&pool, "evt_o2").await, "stale");
}

#[sqlx::test]
async fn an_event_the_api_does_not_know_fails_the_run(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.add_event(checkout("evt_k1", now(), "cy", "cus_k", None));
    let run = replay(&pool, &stripe, &["evt_k1", "evt_nope"], &[]).await;
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(
        run.lines_starting("evt_k1 "),
        ["evt_k1 checkout.session.completed applied"]
    );
    let line = run.lines_starting("evt_nope ")[0];
    assert!(line.contains("not found in Stripe's API"), "{line}");

    // Without a key, the setting is named and nothing runs.
    let url = db(&pool);
    let run = run_without_key(&url).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("STRIPE_SECRET_KEY"), "{run}");
}

async fn run_without_key(url: &str) -> Run {
    run(&["replay", "evt_k1"], &[("DATABASE_URL", url)]).await
}
