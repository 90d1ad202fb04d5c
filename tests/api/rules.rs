//! The SQL helpers that carry the ordering rules and the session-data check,
//! tested directly.

use sqlx::PgPool;

async fn supersedes(pool: &PgPool, incoming: (&str, i64), current: (&str, i64)) -> bool {
    sqlx::query_scalar("SELECT sw_supersedes($1, to_timestamp($2), $3, to_timestamp($4))")
        .bind(incoming.0)
        .bind(incoming.1 as f64)
        .bind(current.0)
        .bind(current.1 as f64)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn ordering_rules(pool: PgPool) {
    let cases = [
        // Newer wins, older loses.
        (("past_due", 11), ("active", 10), true),
        (("past_due", 9), ("active", 10), false),
        // A tie: the later delivery wins...
        (("past_due", 10), ("active", 10), true),
        (("active", 10), ("past_due", 10), true),
        // ...a terminal status wins and stays...
        (("canceled", 10), ("active", 10), true),
        (("incomplete_expired", 10), ("incomplete", 10), true),
        (("active", 10), ("canceled", 10), false),
        // ...and incomplete never overwrites a later stage.
        (("incomplete", 10), ("active", 10), false),
        (("active", 10), ("incomplete", 10), true),
        // Canceled never becomes active again.
        (("active", 99), ("canceled", 10), false),
        (("trialing", 99), ("incomplete_expired", 10), false),
        (("incomplete", 11), ("trialing", 10), false),
        (("incomplete", 11), ("incomplete", 10), true),
    ];
    for (incoming, current, expected) in cases {
        assert_eq!(
            supersedes(&pool, incoming, current).await,
            expected,
            "{incoming:?} over {current:?}"
        );
    }
}

/// `sw_session_with`: the worker's keys set in place or appended, every
/// other member as written, NULL for text that is not a JSON object, and the
/// text itself when nothing would change.
#[sqlx::test]
async fn session_data_gets_the_keys_and_keeps_the_rest_as_written(pool: PgPool) {
    let keys = r#"{"subscribed": true, "subscription_status": "active"}"#;
    let cases: [(Option<&str>, Option<&str>); 14] = [
        (
            None,
            Some(r#"{"subscribed": true, "subscription_status": "active"}"#),
        ),
        (
            Some("{}"),
            Some(r#"{"subscribed": true, "subscription_status": "active"}"#),
        ),
        (
            Some(r#"{"a": 1e+16, "subscribed": false, "b" : -0.0}"#),
            Some(r#"{"a": 1e+16, "subscribed": true, "b": -0.0, "subscription_status": "active"}"#),
        ),
        (
            Some("  \n{\"a\": [1.50, {\"x\" : 1}]}"),
            Some(
                r#"{"a": [1.50, {"x" : 1}], "subscribed": true, "subscription_status": "active"}"#,
            ),
        ),
        // json_each refuses these; the slow path keeps them (keys' text too).
        (
            Some(r#"{"a": "\u0000", "\ud800": ["\ud800", 1.10]}"#),
            Some(
                r#"{"a": "\u0000", "\ud800": ["\ud800",1.10], "subscribed": true, "subscription_status": "active"}"#,
            ),
        ),
        // Nothing to change: the text itself comes back.
        (
            Some(r#"{"subscription_status":"active", "subscribed":true}"#),
            Some(r#"{"subscription_status":"active", "subscribed":true}"#),
        ),
        (
            Some(r#"{"z": "\u0000", "subscribed": true, "subscription_status": "active"}"#),
            Some(r#"{"z": "\u0000", "subscribed": true, "subscription_status": "active"}"#),
        ),
        (Some("{broken"), None),
        (Some(r#"{"a": NaN}"#), None),
        (Some(r#"{"a": "\u0000""#), None),
        (Some(""), None),
        (Some("[1, 2]"), None),
        (Some("\"text\""), None),
        (Some("null"), None),
    ];
    for (data, expected) in cases {
        let written: Option<String> = sqlx::query_scalar("SELECT sw_session_with($1, $2::json)")
            .bind(data)
            .bind(keys)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(written.as_deref(), expected, "{data:?}");
    }
}

/// `created`, the payload's status, and the API's answer (with the event
/// that had set the state when it was read) when there is one.
async fn apply_raw(
    pool: &PgPool,
    id: &str,
    created: i64,
    status: &str,
    truth: Option<(&str, Option<&str>)>,
) -> String {
    sqlx::query_scalar(
        "SELECT out_outcome FROM sw_apply_event($1, 'customer.subscription.updated', $2, 'subscription', \
         'sub_1', 'cus_1', 'ann', $3, NULL, $4, NULL, $5, NULL, NULL, ARRAY['active', 'trialing'])",
    )
    .bind(id)
    .bind(created)
    .bind(status)
    .bind(truth.map(|(status, _)| status))
    .bind(truth.and_then(|(_, read_against)| read_against))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn status(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT status FROM sw_subscriptions WHERE subscription_id = 'sub_1'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The API's answer wins over the recorded state, but cannot reopen a final
/// one: it may have been read just before the event that ended it.
#[sqlx::test]
async fn the_apis_answer_settles_but_never_reopens_a_final_state(pool: PgPool) {
    assert_eq!(
        apply_raw(&pool, "e1", 100, "past_due", None).await,
        "applied"
    );
    // Older than the recorded state, yet the truth.
    assert_eq!(
        apply_raw(&pool, "e2", 50, "unpaid", Some(("active", Some("e1")))).await,
        "applied"
    );
    assert_eq!(status(&pool).await, "active");
    assert_eq!(
        apply_raw(&pool, "e3", 200, "canceled", None).await,
        "applied"
    );
    assert_eq!(
        apply_raw(&pool, "e4", 300, "active", Some(("active", Some("e3")))).await,
        "stale"
    );
    assert_eq!(status(&pool).await, "canceled");
}

/// Compare and set: an answer read against a state that has changed since
/// gives way to the payload under the ordering rules.
#[sqlx::test]
async fn the_apis_answer_yields_to_a_state_recorded_while_it_was_read(pool: PgPool) {
    assert_eq!(apply_raw(&pool, "e1", 100, "active", None).await, "applied");
    // e3 is recorded while the API is asked about e2 (read against e1).
    assert_eq!(
        apply_raw(&pool, "e3", 200, "past_due", None).await,
        "applied"
    );
    assert_eq!(
        apply_raw(&pool, "e2", 100, "active", Some(("active", Some("e1")))).await,
        "stale"
    );
    assert_eq!(status(&pool).await, "past_due");
    // Read when nothing was recorded, but something was meanwhile.
    assert_eq!(
        apply_raw(&pool, "e4", 100, "active", Some(("active", None))).await,
        "stale"
    );
    assert_eq!(status(&pool).await, "past_due");
    // The state read is still the state: the answer stands.
    assert_eq!(
        apply_raw(&pool, "e5", 200, "past_due", Some(("active", Some("e3")))).await,
        "applied"
    );
    assert_eq!(status(&pool).await, "active");
}
