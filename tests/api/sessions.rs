//! What an applied event does to `user_sessions` and the web app's view.

use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test]
async fn a_paid_checkout_marks_only_the_users_active_sessions(pool: PgPool) {
    let app = app(pool.clone());
    let data = r#"{"user_id": 42, "cart": {"items": [1, 2]}, "theme": "dark", "ratio": 1.50}"#;
    add_session(&pool, "active-1", "alice", Some(data), 60, true).await;
    add_session(&pool, "active-2", "alice", None, 600, true).await;
    add_session(&pool, "expired", "alice", Some(data), -1, false).await;
    add_session(&pool, "expired-active", "alice", Some(data), -1, true).await;
    add_session(&pool, "deactivated", "alice", Some(data), 60, false).await;
    add_session(&pool, "other-user", "bob", Some(data), 60, true).await;
    add_session(&pool, "other-case", "Alice", Some(data), 60, true).await;

    let event = checkout("evt_checkout", now(), "alice", "cus_a", Some("sub_a"));
    assert_eq!(outcome(&app, &event).await, "applied");

    let first = session(&pool, "active-1").await;
    assert_eq!(first["subscribed"], true);
    assert_eq!(first["subscription_status"], "active");
    assert_eq!(first["user_id"], 42);
    assert_eq!(first["cart"]["items"], serde_json::json!([1, 2]));
    assert_eq!(first["theme"], "dark");
    assert!(
        raw_session(&pool, "active-1")
            .await
            .unwrap()
            .contains("1.50")
    );
    let second = session(&pool, "active-2").await;
    assert_eq!(second["subscribed"], true);
    assert_eq!(second["subscription_status"], "active");
    assert_eq!(second["subscription"]["id"], "sub_a");
    assert_eq!(second.as_object().unwrap().len(), 3, "{second}");

    for untouched in [
        "expired",
        "expired-active",
        "deactivated",
        "other-user",
        "other-case",
    ] {
        assert_eq!(
            raw_session(&pool, untouched).await.as_deref(),
            Some(data),
            "{untouched}"
        );
    }
    let fresh: Vec<String> = sqlx::query_scalar(
        "SELECT session_id FROM user_sessions \
         WHERE updated_at > (now() AT TIME ZONE 'UTC') - interval '1 minute' ORDER BY session_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(fresh, ["active-1", "active-2"]);
    assert_eq!(
        user_status(&pool, "alice").await,
        Some((true, Some("active".into())))
    );

    // A replay changes nothing, not even updated_at.
    let before: Vec<(String, Option<String>, chrono::NaiveDateTime)> = sqlx::query_as(
        "SELECT session_id, session_data, updated_at FROM user_sessions ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(outcome(&app, &event).await, "duplicate");
    let after: Vec<(String, Option<String>, chrono::NaiveDateTime)> = sqlx::query_as(
        "SELECT session_id, session_data, updated_at FROM user_sessions ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(before, after);
}

#[sqlx::test]
async fn sessions_that_are_not_json_objects_are_left_alone(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "broken", "carol", Some("{not json"), 60, true).await;
    add_session(&pool, "array", "carol", Some("[1, 2]"), 60, true).await;
    add_session(&pool, "empty", "carol", Some(""), 60, true).await;
    add_session(&pool, "null", "carol", None, 60, true).await;
    add_session(&pool, "good", "carol", Some(r#"{"a": 1}"#), 60, true).await;

    let (status, body) = deliver(
        &app,
        &checkout("evt_c", now(), "carol", "cus_c", Some("sub_c")),
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    assert_eq!(
        raw_session(&pool, "broken").await.as_deref(),
        Some("{not json")
    );
    assert_eq!(raw_session(&pool, "array").await.as_deref(), Some("[1, 2]"));
    assert_eq!(raw_session(&pool, "empty").await.as_deref(), Some(""));
    assert_eq!(session(&pool, "null").await["subscribed"], true);
    assert_eq!(session(&pool, "good").await["a"], 1);
    assert_eq!(session(&pool, "good").await["subscribed"], true);
}

/// `user_sessions` holds UTC in TIMESTAMP columns; whatever the connection's
/// time zone, a session that ends in an hour is active and one that ended an
/// hour ago is not.
#[sqlx::test]
async fn active_means_not_expired_in_utc_whatever_the_time_zone(pool: PgPool) {
    for zone in ["Pacific/Kiritimati", "America/Anchorage", "Asia/Kolkata"] {
        let zoned = pool_in_zone(&pool, zone).await;

        let user = format!("user-{zone}");
        add_session(
            &pool,
            &format!("{zone}-ends-soon"),
            &user,
            Some("{}"),
            60,
            true,
        )
        .await;
        add_session(
            &pool,
            &format!("{zone}-ended"),
            &user,
            Some("{}"),
            -60,
            true,
        )
        .await;
        let event = checkout(
            &format!("evt_{zone}"),
            now(),
            &user,
            &format!("cus_{zone}"),
            None,
        );
        assert_eq!(outcome(&app(zoned.clone()), &event).await, "applied");

        assert_eq!(
            session(&pool, &format!("{zone}-ends-soon")).await["subscribed"],
            true,
            "{zone}"
        );
        assert_eq!(
            raw_session(&pool, &format!("{zone}-ended"))
                .await
                .as_deref(),
            Some("{}"),
            "{zone}"
        );
        zoned.close().await;
    }
}

#[sqlx::test]
async fn a_user_with_several_subscriptions_is_subscribed_while_one_counts(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "dave", Some("{}"), 60, true).await;
    let t = now() - 100;
    assert_eq!(
        outcome(
            &app,
            &subscription("e1", "created", t, "sub_1", "cus_d", "active", Some("dave"))
        )
        .await,
        "applied"
    );
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "e2",
                "created",
                t + 1,
                "sub_2",
                "cus_d",
                "trialing",
                Some("dave")
            )
        )
        .await,
        "applied"
    );
    assert_eq!(
        outcome(
            &app,
            &subscription(
                "e3",
                "deleted",
                t + 2,
                "sub_1",
                "cus_d",
                "active",
                Some("dave")
            )
        )
        .await,
        "applied"
    );
    assert_eq!(session(&pool, "s").await["subscribed"], true);
    assert_eq!(session(&pool, "s").await["subscription_status"], "trialing");
    assert_eq!(
        user_status(&pool, "dave").await,
        Some((true, Some("trialing".into())))
    );

    assert_eq!(
        outcome(
            &app,
            &subscription("e4", "updated", t + 3, "sub_2", "cus_d", "past_due", None)
        )
        .await,
        "applied"
    );
    assert_eq!(session(&pool, "s").await["subscribed"], false);
    assert_eq!(session(&pool, "s").await["subscription_status"], "past_due");
    assert_eq!(
        user_status(&pool, "dave").await,
        Some((false, Some("past_due".into())))
    );
}

#[sqlx::test]
async fn paused_and_resumed_follow_the_subscription_status(pool: PgPool) {
    let app = app(pool.clone());
    add_session(&pool, "s", "fay", Some("{}"), 60, true).await;
    let t = now() - 100;
    outcome(&app, &checkout("e0", t, "fay", "cus_f", Some("sub_f"))).await;
    assert_eq!(session(&pool, "s").await["subscribed"], true);
    outcome(
        &app,
        &subscription("e1", "paused", t + 1, "sub_f", "cus_f", "paused", None),
    )
    .await;
    assert_eq!(session(&pool, "s").await["subscribed"], false);
    assert_eq!(session(&pool, "s").await["subscription_status"], "paused");
    outcome(
        &app,
        &subscription("e2", "resumed", t + 2, "sub_f", "cus_f", "active", None),
    )
    .await;
    assert_eq!(session(&pool, "s").await["subscribed"], true);
}
