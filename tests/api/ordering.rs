//! Out-of-order and same-second deliveries, as Stripe makes them.

use sqlx::PgPool;

use crate::helpers::*;

async fn flag(pool: &PgPool, session_id: &str) -> (bool, String) {
    let data = session(pool, session_id).await;
    (
        data["subscribed"].as_bool().unwrap(),
        data["subscription_status"].as_str().unwrap().to_owned(),
    )
}

#[sqlx::test]
async fn an_older_event_does_not_overwrite_a_newer_one(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "gina", Some("{}"), 60, true).await;
    let t = now() - 100;
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "new",
                "updated",
                t + 10,
                "sub_g",
                "cus_g",
                "past_due",
                Some("gina")
            )
        )
        .await,
        "applied"
    );
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "old",
                "created",
                t,
                "sub_g",
                "cus_g",
                "active",
                Some("gina")
            )
        )
        .await,
        "stale"
    );
    assert_eq!(flag(&pool, "s").await, (false, "past_due".into()));
    let outcome_text: String =
        sqlx::query_scalar("SELECT outcome FROM sw_events WHERE event_id = 'old'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcome_text, "stale");
}

#[sqlx::test]
async fn on_a_tie_canceled_wins_in_either_delivery_order(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s1", "hal", Some("{}"), 60, true).await;
    add_session(&pool, "s2", "ivy", Some("{}"), 60, true).await;
    let t = now() - 100;
    // Canceled first, then an update of the same second.
    outcome(
        &app,
        &subscription(
            "h1",
            "deleted",
            t,
            "sub_h",
            "cus_h",
            "canceled",
            Some("hal"),
        ),
    )
    .await;
    assert_eq!(
        outcome(
            &app,
            &subscription("h2", "updated", t, "sub_h", "cus_h", "active", Some("hal"))
        )
        .await,
        "stale"
    );
    assert_eq!(flag(&pool, "s1").await, (false, "canceled".into()));
    // An update first, then the cancellation of the same second.
    outcome(
        &app,
        &subscription("i1", "updated", t, "sub_i", "cus_i", "active", Some("ivy")),
    )
    .await;
    assert_eq!(flag(&pool, "s2").await, (true, "active".into()));
    assert_eq!(
        outcome(
            &app,
            &subscription("i2", "deleted", t, "sub_i", "cus_i", "active", Some("ivy"))
        )
        .await,
        "applied"
    );
    assert_eq!(flag(&pool, "s2").await, (false, "canceled".into()));
}

#[sqlx::test]
async fn on_a_tie_incomplete_does_not_overwrite_a_later_stage(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "jan", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(
        &app,
        &subscription("j1", "updated", t, "sub_j", "cus_j", "active", Some("jan")),
    )
    .await;
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "j2",
                "created",
                t,
                "sub_j",
                "cus_j",
                "incomplete",
                Some("jan")
            )
        )
        .await,
        "stale"
    );
    assert_eq!(flag(&pool, "s").await, (true, "active".into()));
}

#[sqlx::test]
async fn on_a_tie_the_later_delivery_wins(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "kim", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(
        &app,
        &subscription("k1", "updated", t, "sub_k", "cus_k", "active", Some("kim")),
    )
    .await;
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "k2",
                "updated",
                t,
                "sub_k",
                "cus_k",
                "past_due",
                Some("kim")
            )
        )
        .await,
        "applied"
    );
    assert_eq!(flag(&pool, "s").await, (false, "past_due".into()));
}

#[sqlx::test]
async fn a_canceled_subscription_never_becomes_active_again(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "lea", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(
        &app,
        &subscription(
            "l1",
            "deleted",
            t,
            "sub_l",
            "cus_l",
            "canceled",
            Some("lea"),
        ),
    )
    .await;
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "l2",
                "updated",
                t + 50,
                "sub_l",
                "cus_l",
                "active",
                Some("lea")
            )
        )
        .await,
        "stale"
    );
    assert_eq!(
        outcome(&app, &checkout("l3", t + 60, "lea", "cus_l", Some("sub_l"))).await,
        "stale"
    );
    assert_eq!(flag(&pool, "s").await, (false, "canceled".into()));
    assert_eq!(
        user_status(&pool, "lea").await,
        Some((false, Some("canceled".into())))
    );
    // A renewal is a new subscription, with a new id.
    outcome(
        &app,
        &subscription("l4", "created", t + 70, "sub_l2", "cus_l", "active", None),
    )
    .await;
    assert_eq!(flag(&pool, "s").await, (true, "active".into()));
}

#[sqlx::test]
async fn a_checkout_does_not_undo_a_newer_subscription_event(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "max", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(
        &app,
        &subscription(
            "m1",
            "updated",
            t + 5,
            "sub_m",
            "cus_m",
            "past_due",
            Some("max"),
        ),
    )
    .await;
    assert_eq!(
        outcome(&app, &checkout("m0", t, "max", "cus_m", Some("sub_m"))).await,
        "stale"
    );
    assert_eq!(flag(&pool, "s").await, (false, "past_due".into()));
}

/// Stripe often sends `customer.subscription.created` before
/// `checkout.session.completed`; the subscription's state waits for its user.
#[sqlx::test]
async fn a_subscription_event_before_its_checkout_is_kept_until_the_user_is_known(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "ned", Some("{}"), 60, true).await;
    let t = now() - 100;
    assert_eq!(
        outcome(
            &app,
            &subscription("n1", "created", t, "sub_n", "cus_n", "incomplete", None)
        )
        .await,
        "unknown_user"
    );
    assert_eq!(
        outcome(
            &app,
            &subscription("n2", "updated", t + 1, "sub_n", "cus_n", "trialing", None)
        )
        .await,
        "unknown_user"
    );
    assert_eq!(user_status(&pool, "ned").await, None);
    assert_eq!(
        outcome(&app, &checkout("n3", t, "ned", "cus_n", Some("sub_n"))).await,
        "applied"
    );
    // The checkout is older than the trialing state it found: the state stands.
    assert_eq!(flag(&pool, "s").await, (true, "trialing".into()));
    // From now on the customer's events find the user.
    assert_eq!(
        outcome(
            &app,
            &subscription("n4", "updated", t + 2, "sub_n", "cus_n", "unpaid", None)
        )
        .await,
        "applied"
    );
    assert_eq!(flag(&pool, "s").await, (false, "unpaid".into()));
}

#[sqlx::test]
async fn a_paid_one_off_checkout_counts_until_a_subscription_event_follows(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "ola", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(&app, &checkout("o1", t, "ola", "cus_o", None)).await;
    assert_eq!(flag(&pool, "s").await, (true, "active".into()));
    outcome(
        &app,
        &subscription("o2", "created", t + 1, "sub_o", "cus_o", "incomplete", None),
    )
    .await;
    assert_eq!(flag(&pool, "s").await, (false, "incomplete".into()));
}
