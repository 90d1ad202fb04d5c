//! A subscription that changes hands leaves its previous user, in the same
//! transaction: both users' sessions and view rows are brought up to date.
//! The customer -> username mapping follows the newest checkout by
//! `created`.

use sqlx::PgPool;

use crate::helpers::*;

/// (subscribed, subscription_status) of a session.
async fn flag(pool: &PgPool, session_id: &str) -> (bool, String) {
    let data = session(pool, session_id).await;
    (
        data["subscribed"].as_bool().unwrap(),
        data["subscription_status"].as_str().unwrap().to_owned(),
    )
}

async fn mapped_user(pool: &PgPool, customer: &str) -> String {
    sqlx::query_scalar("SELECT username FROM sw_customers WHERE customer_id = $1")
        .bind(customer)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn metadata_naming_another_user_takes_the_subscription_from_the_first(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "ann-1", "ann", Some("{}"), 60, true).await;
    add_session(&pool, "bob-1", "bob", Some("{}"), 60, true).await;
    let t = now() - 100;

    let paid = checkout("e1", t, "ann", "cus_1", Some("sub_1"));
    assert_eq!(outcome(&app, &paid).await, "applied");
    assert_eq!(flag(&pool, "ann-1").await, (true, "active".into()));

    let to_bob = subscription(
        "e2",
        "updated",
        t + 1,
        "sub_1",
        "cus_1",
        "active",
        Some("bob"),
    );
    assert_eq!(outcome(&app, &to_bob).await, "applied");
    assert_eq!(flag(&pool, "ann-1").await, (false, "none".into()));
    assert_eq!(flag(&pool, "bob-1").await, (true, "active".into()));
    assert_eq!(user_status(&pool, "ann").await, Some((false, None)));
    assert_eq!(
        user_status(&pool, "bob").await,
        Some((true, Some("active".into())))
    );

    let ended = subscription(
        "e3",
        "deleted",
        t + 2,
        "sub_1",
        "cus_1",
        "active",
        Some("bob"),
    );
    assert_eq!(outcome(&app, &ended).await, "applied");
    assert_eq!(flag(&pool, "ann-1").await, (false, "none".into()));
    assert_eq!(flag(&pool, "bob-1").await, (false, "canceled".into()));
    assert_eq!(user_status(&pool, "ann").await, Some((false, None)));
    assert_eq!(
        user_status(&pool, "bob").await,
        Some((false, Some("canceled".into())))
    );
}

#[sqlx::test]
async fn a_newer_checkout_takes_the_customer_and_its_subscriptions(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "ann-1", "ann", Some("{}"), 60, true).await;
    add_session(&pool, "bob-1", "bob", Some("{}"), 60, true).await;
    let t = now() - 100;

    assert_eq!(
        outcome(&app, &checkout("e1", t, "ann", "cus_1", Some("sub_1"))).await,
        "applied"
    );
    // Named by its own metadata: stays with ann whatever the customer does.
    let named = subscription(
        "e2",
        "created",
        t + 1,
        "sub_2",
        "cus_1",
        "trialing",
        Some("ann"),
    );
    assert_eq!(outcome(&app, &named).await, "applied");

    let remap = checkout("e3", t + 10, "bob", "cus_1", Some("sub_3"));
    assert_eq!(outcome(&app, &remap).await, "applied");
    assert_eq!(mapped_user(&pool, "cus_1").await, "bob");
    let owners: Vec<(String, String)> =
        sqlx::query_as("SELECT subscription_id, username FROM sw_subscriptions ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        owners,
        [
            ("sub_1".into(), "bob".into()),
            ("sub_2".into(), "ann".into()),
            ("sub_3".into(), "bob".into())
        ]
    );
    assert_eq!(flag(&pool, "ann-1").await, (true, "trialing".into()));
    assert_eq!(flag(&pool, "bob-1").await, (true, "active".into()));

    // sub_2's end leaves ann with nothing.
    let ended = subscription(
        "e4",
        "deleted",
        t + 11,
        "sub_2",
        "cus_1",
        "trialing",
        Some("ann"),
    );
    assert_eq!(outcome(&app, &ended).await, "applied");
    assert_eq!(flag(&pool, "ann-1").await, (false, "canceled".into()));
    assert_eq!(
        user_status(&pool, "ann").await,
        Some((false, Some("canceled".into())))
    );
}

#[sqlx::test]
async fn an_older_checkout_delivered_late_does_not_take_the_customer_back(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "ann-1", "ann", Some("{}"), 60, true).await;
    add_session(&pool, "bob-1", "bob", Some("{}"), 60, true).await;
    let t = now() - 100;

    assert_eq!(
        outcome(&app, &checkout("e1", t, "ann", "cus_1", Some("sub_1"))).await,
        "applied"
    );
    assert_eq!(
        outcome(&app, &checkout("e2", t + 10, "bob", "cus_1", Some("sub_1"))).await,
        "applied"
    );
    assert_eq!(flag(&pool, "ann-1").await, (false, "none".into()));
    assert_eq!(flag(&pool, "bob-1").await, (true, "active".into()));
    // ann no longer has a customer or a subscription: no longer a known user.
    assert_eq!(user_status(&pool, "ann").await, None);

    // ann's first checkout session, completed before bob's, delivered last.
    let late = checkout("e0", t - 5, "ann", "cus_1", Some("sub_1"));
    assert_eq!(outcome(&app, &late).await, "stale");
    assert_eq!(mapped_user(&pool, "cus_1").await, "bob");
    assert_eq!(flag(&pool, "ann-1").await, (false, "none".into()));
    assert_eq!(user_status(&pool, "ann").await, None);

    // The customer's next subscription, without metadata, is bob's.
    let next = subscription("e3", "created", t + 20, "sub_9", "cus_1", "active", None);
    assert_eq!(outcome(&app, &next).await, "applied");
    let owner: String =
        sqlx::query_scalar("SELECT username FROM sw_subscriptions WHERE subscription_id = 'sub_9'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(owner, "bob");
}

/// Two events moving subscriptions between the same two users in opposite
/// directions at once: each locks both users, always in the same order, so
/// neither waits for the other for ever (PostgreSQL would end one with a
/// deadlock error, and the webhook would answer 503).
#[sqlx::test]
async fn opposite_moves_at_once_do_not_deadlock(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "ann-1", "ann", Some("{}"), 60, true).await;
    add_session(&pool, "bob-1", "bob", Some("{}"), 60, true).await;
    let t = now() - 1000;
    for round in 0..20 {
        let (a_to, b_to) = if round % 2 == 0 {
            ("bob", "ann")
        } else {
            ("ann", "bob")
        };
        let created = t + round;
        let a = subscription(
            &format!("a{round}"),
            "updated",
            created,
            "sub_a",
            "cus_a",
            "active",
            Some(a_to),
        );
        let b = subscription(
            &format!("b{round}"),
            "updated",
            created,
            "sub_b",
            "cus_b",
            "trialing",
            Some(b_to),
        );
        let (first, second) = tokio::join!(outcome(&app, &a), outcome(&app, &b));
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("applied", "applied"),
            "round {round}"
        );
    }
    // Round 19 gave sub_a to ann and sub_b to bob.
    assert_eq!(flag(&pool, "ann-1").await, (true, "active".into()));
    assert_eq!(flag(&pool, "bob-1").await, (true, "trialing".into()));
}
