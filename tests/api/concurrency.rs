//! Concurrent duplicate deliveries, to one instance and to several.

use sqlx::PgPool;

use crate::helpers::*;

/// Counts every later UPDATE of each session row, whoever makes it.
async fn count_updates(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE session_writes (session_id TEXT); \
         CREATE FUNCTION log_session_write() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO session_writes VALUES (NEW.session_id); RETURN NEW; END $$; \
         CREATE TRIGGER log_session_write AFTER UPDATE ON user_sessions \
           FOR EACH ROW EXECUTE FUNCTION log_session_write();",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn writes_of(pool: &PgPool, session_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM session_writes WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn twenty_concurrent_deliveries_of_one_event_apply_once(pool: PgPool) {
    add_session(&pool, "s", "pam", Some(r#"{"n": 1}"#), 60, true).await;
    count_updates(&pool).await;
    // Two instances: separate pools, as separate processes would have.
    let other = another_instance(&pool).await;
    let instances = [app(pool.clone()), app(other)];
    let event = checkout("evt_same", now(), "pam", "cus_p", Some("sub_p"));

    let deliveries = (0..20).map(|i| {
        let app = instances[i % 2].clone();
        let event = event.clone();
        tokio::spawn(async move { outcome_as_stripe_retries(&app, &event).await })
    });
    let mut outcomes: Vec<String> = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.unwrap());
    }
    outcomes.sort();
    let applied = outcomes.iter().filter(|o| *o == "applied").count();
    let duplicate = outcomes.iter().filter(|o| *o == "duplicate").count();
    assert_eq!((applied, duplicate), (1, 19), "{outcomes:?}");
    assert_eq!(writes_of(&pool, "s").await, 1);
    assert_eq!(session(&pool, "s").await["subscribed"], true);
    assert_eq!(session(&pool, "s").await["n"], 1);
}

/// Different events of one user racing on two instances end in the state the
/// ordering rules give, whatever the interleaving.
#[sqlx::test]
async fn racing_events_of_one_user_settle_on_the_newest_state(pool: PgPool) {
    add_session(&pool, "s", "quin", Some("{}"), 60, true).await;
    let other = another_instance(&pool).await;
    let instances = [app(pool.clone()), app(other)];
    let t = now() - 1000;
    let statuses = [
        "active", "past_due", "active", "unpaid", "active", "past_due", "active", "trialing",
    ];
    let mut events: Vec<_> = (0..40)
        .map(|i| {
            let status = statuses[i % statuses.len()];
            subscription(
                &format!("evt_{i}"),
                "updated",
                t + i as i64,
                "sub_q",
                "cus_q",
                status,
                Some("quin"),
            )
        })
        .collect();
    events.reverse();
    let handles: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let app = instances[i % 2].clone();
            tokio::spawn(async move { outcome_as_stripe_retries(&app, &event).await })
        })
        .collect();
    for handle in handles {
        let result = handle.await.unwrap();
        assert!(result == "applied" || result == "stale", "{result}");
    }
    // evt_39 is the newest: 39 % 8 = 7 -> trialing.
    let data = session(&pool, "s").await;
    assert_eq!(data["subscription_status"], "trialing");
    assert_eq!(data["subscribed"], true);
    let event_id: String =
        sqlx::query_scalar("SELECT event_id FROM sw_subscriptions WHERE subscription_id = 'sub_q'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(event_id, "evt_39");
}
