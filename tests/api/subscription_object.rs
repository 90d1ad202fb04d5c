//! Sessions that say what the user bought: the "subscription" object, the
//! view's columns after the first four, the event types that feed them
//! (trials, pending updates, async payments, entitlement summaries, Connect
//! accounts), and no write where nothing changes.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::fake_stripe::*;
use crate::helpers::*;

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
        "livemode": false, "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind, "data": { "object": object }
    })
}

/// A subscription object at 2024-06-20: the period at the top, items with
/// prices; `extra` overrides fields.
fn sub_object(id: &str, customer: &str, status: &str, extra: Value) -> Value {
    let mut object = json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "metadata": { "username": "ann" }, "current_period_end": 1_900_000_000,
        "cancel_at_period_end": false, "cancel_at": null, "trial_end": null,
        "items": { "object": "list", "has_more": false, "data": [
            { "id": "si_1", "object": "subscription_item", "quantity": 1,
              "price": { "id": "price_pro", "object": "price", "product": "prod_pro", "lookup_key": "pro_monthly" } },
            { "id": "si_2", "object": "subscription_item", "quantity": 5,
              "price": { "id": "price_seat", "object": "price", "product": "prod_seat", "lookup_key": null } }
        ] }
    });
    for (key, value) in extra.as_object().unwrap() {
        object[key] = value.clone();
    }
    object
}

fn summary(id: &str, created: i64, customer: &str, keys: &[&str], has_more: bool) -> Value {
    let data: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| json!({ "id": format!("ent_{n}"), "object": "entitlements.active_entitlement",
                                 "feature": format!("feat_{n}"), "livemode": false, "lookup_key": key }))
        .collect();
    event(
        id,
        "entitlements.active_entitlement_summary.updated",
        created,
        json!({ "object": "entitlements.active_entitlement_summary", "customer": customer,
                "livemode": false,
                "entitlements": { "object": "list", "has_more": has_more, "data": data,
                                  "url": "/v1/entitlements/active_entitlements" } }),
    )
}

type ViewRow = (
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<bool>,
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
    Vec<String>,
);

async fn view(pool: &PgPool, username: &str) -> ViewRow {
    sqlx::query_as(
        "SELECT subscribed, subscription_id, price_id, product_id, lookup_key, quantity, \
                cancel_at_period_end, cancel_at, trial_end, features \
         FROM user_subscription_status WHERE username = $1",
    )
    .bind(username)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn at(unix: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap()
        .naive_utc()
}

#[sqlx::test]
async fn the_session_object_and_the_view_follow_the_subscription(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "ann", Some(r#"{"theme": "dark"}"#), 60, true).await;
    let t = now() - 100;
    let trialing = sub_object(
        "sub_1",
        "cus_1",
        "trialing",
        json!({ "trial_end": 1_800_000_000 }),
    );
    let created = event("e1", "customer.subscription.created", t, trialing);
    assert_eq!(outcome(&app, &created).await, "applied");

    let data = session(&pool, "s").await;
    assert_eq!(data["theme"], "dark");
    assert_eq!(data["subscribed"], true);
    assert_eq!(
        data["subscription"],
        json!({
            "id": "sub_1", "status": "trialing",
            "items": [
                { "price": "price_pro", "product": "prod_pro", "lookup_key": "pro_monthly", "quantity": 1 },
                { "price": "price_seat", "product": "prod_seat", "lookup_key": null, "quantity": 5 }
            ],
            "current_period_end": "2030-03-17T17:46:40Z",
            "cancel_at_period_end": false, "cancel_at": null,
            "trial_end": "2027-01-15T08:00:00Z", "features": []
        })
    );
    assert_eq!(
        view(&pool, "ann").await,
        (
            true,
            Some("sub_1".into()),
            Some("price_pro".into()),
            Some("prod_pro".into()),
            Some("pro_monthly".into()),
            Some(1),
            Some(false),
            None,
            Some(at(1_800_000_000)),
            vec![]
        )
    );

    // Cancelled at the period's end, then not after all.
    let cancelling = sub_object(
        "sub_1",
        "cus_1",
        "active",
        json!({ "cancel_at_period_end": true, "cancel_at": 1_900_000_000 }),
    );
    let updated = event("e2", "customer.subscription.updated", t + 1, cancelling);
    assert_eq!(outcome(&app, &updated).await, "applied");
    let object = &session(&pool, "s").await["subscription"];
    assert_eq!(object["cancel_at_period_end"], true);
    assert_eq!(object["cancel_at"], "2030-03-17T17:46:40Z");
    assert_eq!(view(&pool, "ann").await.7, Some(at(1_900_000_000)));
    let renewing = sub_object("sub_1", "cus_1", "active", json!({}));
    let updated = event("e3", "customer.subscription.updated", t + 2, renewing);
    assert_eq!(outcome(&app, &updated).await, "applied");
    let object = &session(&pool, "s").await["subscription"];
    assert_eq!(object["cancel_at_period_end"], false);
    assert_eq!(object["cancel_at"], Value::Null);
    assert_eq!(view(&pool, "ann").await.6, Some(false));
}

#[sqlx::test]
async fn a_one_off_checkout_has_no_id_and_no_items(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "bo", Some("{}"), 60, true).await;
    add_session(&pool, "other", "cy", Some("{}"), 60, true).await;
    assert_eq!(
        outcome(&app, &checkout("e1", now(), "bo", "cus_b", None)).await,
        "applied"
    );
    let object = &session(&pool, "s").await["subscription"];
    assert_eq!(object["id"], Value::Null);
    assert_eq!(object["items"], json!([]));
    assert_eq!(object["status"], "active");
    // Nobody knows cy: the worker wrote nothing there.
    assert_eq!(raw_session(&pool, "other").await.as_deref(), Some("{}"));
    let keys: Value = serde_json::from_str(
        &sqlx::query_scalar::<_, String>("SELECT sw_session_keys('cy')::text")
            .fetch_one(&pool)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        keys,
        json!({ "subscribed": false, "subscription_status": "none", "subscription": null })
    );
}

#[sqlx::test]
async fn a_session_already_right_is_not_written(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "di", Some("{}"), 60, true).await;
    sqlx::raw_sql(
        "CREATE TABLE writes (n INTEGER NOT NULL DEFAULT 0); INSERT INTO writes VALUES (0);
         CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN UPDATE writes SET n = n + 1; RETURN NEW; END $$;
         CREATE TRIGGER counted BEFORE UPDATE ON user_sessions FOR EACH ROW EXECUTE FUNCTION count_write();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let writes = || async {
        sqlx::query_scalar::<_, i32>("SELECT n FROM writes")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let t = now() - 100;
    let object = sub_object(
        "sub_1",
        "cus_1",
        "active",
        json!({ "metadata": { "username": "di" } }),
    );
    let created = event("e1", "customer.subscription.created", t, object.clone());
    assert_eq!(outcome(&app, &created).await, "applied");
    assert_eq!(writes().await, 1);
    let before = raw_session(&pool, "s").await;

    // A metadata-only change: nothing a session shows.
    let mut metadata_only = object;
    metadata_only["metadata"]["note"] = json!("vip");
    let updated = event("e2", "customer.subscription.updated", t + 1, metadata_only);
    assert_eq!(outcome(&app, &updated).await, "applied");
    assert_eq!(writes().await, 1);
    assert_eq!(raw_session(&pool, "s").await, before);
}

#[sqlx::test]
async fn the_other_subscription_event_types_follow_the_status(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "ann", Some("{}"), 60, true).await;
    let t = now() - 100;
    for (n, (kind, status)) in [
        ("trial_will_end", "trialing"),
        ("pending_update_applied", "active"),
        ("pending_update_expired", "past_due"),
    ]
    .into_iter()
    .enumerate()
    {
        let object = sub_object("sub_1", "cus_1", status, json!({}));
        let kind = format!("customer.subscription.{kind}");
        let delivered = event(&format!("e{n}"), &kind, t + n as i64, object);
        assert_eq!(outcome(&app, &delivered).await, "applied", "{kind}");
        assert_eq!(
            session(&pool, "s").await["subscription_status"],
            status,
            "{kind}"
        );
    }
}

#[sqlx::test]
async fn an_async_payment_settles_a_checkout_either_way(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "ok", "eve", Some("{}"), 60, true).await;
    add_session(&pool, "ko", "fox", Some("{}"), 60, true).await;
    let t = now() - 100;
    let checkout_of = |id: &str, kind: &str, created: i64, user: &str, status: &str| {
        event(
            id,
            kind,
            created,
            json!({
            "id": format!("cs_{user}"), "object": "checkout.session", "client_reference_id": user,
            "customer": format!("cus_{user}"), "subscription": null, "mode": "payment",
            "payment_status": status, "status": "complete", "metadata": {} }),
        )
    };
    for user in ["eve", "fox"] {
        let completed = checkout_of(
            &format!("c_{user}"),
            "checkout.session.completed",
            t,
            user,
            "unpaid",
        );
        outcome(&app, &completed).await;
        assert_eq!(
            session(&pool, if user == "eve" { "ok" } else { "ko" }).await["subscribed"],
            Value::Null
        );
    }
    let succeeded = checkout_of(
        "p_eve",
        "checkout.session.async_payment_succeeded",
        t + 5,
        "eve",
        "paid",
    );
    assert_eq!(outcome(&app, &succeeded).await, "applied");
    assert_eq!(session(&pool, "ok").await["subscribed"], true);
    assert_eq!(
        user_status(&pool, "eve").await,
        Some((true, Some("active".into())))
    );

    let failed = checkout_of(
        "p_fox",
        "checkout.session.async_payment_failed",
        t + 5,
        "fox",
        "unpaid",
    );
    assert_ne!(outcome(&app, &failed).await, "applied");
    assert_eq!(session(&pool, "ko").await["subscribed"], Value::Null);
    assert_eq!(user_status(&pool, "fox").await, Some((false, None)));
}

#[sqlx::test]
async fn entitlement_summaries_set_the_users_features_newest_first(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "ann", Some("{}"), 60, true).await;
    let t = now() - 100;
    let created = event(
        "e1",
        "customer.subscription.created",
        t,
        sub_object("sub_1", "cus_1", "active", json!({})),
    );
    outcome(&app, &created).await;
    // A second customer of the same user (a checkout ties it to her).
    outcome(&app, &checkout("e2", t, "ann", "cus_2", None)).await;

    assert_eq!(
        outcome(
            &app,
            &summary("f1", t + 10, "cus_1", &["sso", "export"], false)
        )
        .await,
        "applied"
    );
    assert_eq!(
        outcome(&app, &summary("f2", t + 10, "cus_2", &["api"], false)).await,
        "applied"
    );
    let features = |data: Value| data["subscription"]["features"].clone();
    assert_eq!(
        features(session(&pool, "s").await),
        json!(["api", "export", "sso"])
    );
    assert_eq!(view(&pool, "ann").await.9, ["api", "export", "sso"]);

    // Older than the recorded summary: changes nothing.
    assert_eq!(
        outcome(&app, &summary("f0", t + 5, "cus_1", &[], false)).await,
        "stale"
    );
    assert_eq!(
        features(session(&pool, "s").await),
        json!(["api", "export", "sso"])
    );
    assert_eq!(
        outcome(&app, &summary("f3", t + 20, "cus_1", &["export"], false)).await,
        "applied"
    );
    assert_eq!(
        features(session(&pool, "s").await),
        json!(["api", "export"])
    );

    // Without a key, a summary with more pages applies what it lists.
    let partial = summary("f4", t + 30, "cus_2", &["api", "bulk"], true);
    assert_eq!(outcome(&app, &partial).await, "applied");
    assert_eq!(
        features(session(&pool, "s").await),
        json!(["api", "bulk", "export"])
    );
}

#[sqlx::test]
async fn a_summary_with_more_pages_is_read_whole_from_the_api(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let all: Vec<String> = (0..150).map(|n| format!("feature_{n:03}")).collect();
    stripe.set_entitlements("cus_1", all.clone());
    let app = app_with_api(pool.clone(), stripe.client());
    add_session(&pool, "s", "ann", Some("{}"), 60, true).await;
    let t = now() - 100;
    let created = event(
        "e1",
        "customer.subscription.created",
        t,
        sub_object("sub_1", "cus_1", "active", json!({})),
    );
    outcome(&app, &created).await;

    let first_page: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
    let mut paged = summary("f1", t + 1, "cus_1", &first_page, true);
    paged["account"] = json!("acct_connected");
    assert_eq!(outcome(&app, &paged).await, "applied");
    assert_eq!(
        session(&pool, "s").await["subscription"]["features"],
        json!(all)
    );
    let requests = stripe.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|seen| seen.path == "/v1/entitlements/active_entitlements"
                && seen.query.contains("customer=cus_1")
                && seen.stripe_account.as_deref() == Some("acct_connected"))
    );
    assert!(
        requests[1].query.contains("starting_after=ent_99"),
        "{:?}",
        requests[1]
    );
}

#[sqlx::test]
async fn a_connected_accounts_subscription_is_read_with_its_header(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.set_subscription(subscription_object(
        "sub_c",
        "cus_c",
        "past_due",
        Some("ann"),
        1_900_000_000,
    ));
    let app = app_with_api(pool.clone(), stripe.client());
    let mut invoice = invoice_event("e1", "payment_failed", now(), "sub_c", "cus_c");
    invoice["account"] = json!("acct_1Conn");
    assert_eq!(outcome(&app, &invoice).await, "applied");
    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/subscriptions/sub_c");
    assert_eq!(requests[0].stripe_account.as_deref(), Some("acct_1Conn"));
    assert_eq!(
        user_status(&pool, "ann").await,
        Some((false, Some("past_due".into())))
    );
}
