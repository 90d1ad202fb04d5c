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

#[sqlx::test]
async fn session_data_that_is_not_an_object_is_recognised(pool: PgPool) {
    let cases: [(Option<&str>, Option<&str>); 9] = [
        (None, Some("{}")),
        (Some(r#"{"a": 1}"#), Some(r#"{"a": 1}"#)),
        (Some("  \n{\"a\": [1.50]}"), Some(r#"{"a": [1.50]}"#)),
        (Some("{broken"), None),
        (Some("{\"a\": \"\\u0000\"}"), None),
        (Some(""), None),
        (Some("[1, 2]"), None),
        (Some("\"text\""), None),
        (Some("null"), None),
    ];
    for (data, expected) in cases {
        let object: Option<String> = sqlx::query_scalar("SELECT sw_session_object($1)::text")
            .bind(data)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(object.as_deref(), expected, "{data:?}");
    }
}

async fn apply_raw(
    pool: &PgPool,
    id: &str,
    created: i64,
    status: &str,
    authoritative: bool,
) -> String {
    sqlx::query_scalar(
        "SELECT out_outcome FROM sw_apply_event($1, 'customer.subscription.updated', $2, 'subscription', \
         'sub_1', 'cus_1', 'ann', $3, NULL, $4, ARRAY['active', 'trialing'])",
    )
    .bind(id)
    .bind(created)
    .bind(status)
    .bind(authoritative)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The API's answer wins over the recorded state, but cannot reopen a final
/// one: it may have been read just before the event that ended it.
#[sqlx::test]
async fn the_apis_answer_settles_but_never_reopens_a_final_state(pool: PgPool) {
    assert_eq!(
        apply_raw(&pool, "e1", 100, "past_due", false).await,
        "applied"
    );
    // Older than the recorded state, yet the truth.
    assert_eq!(apply_raw(&pool, "e2", 50, "active", true).await, "applied");
    assert_eq!(
        apply_raw(&pool, "e3", 200, "canceled", false).await,
        "applied"
    );
    assert_eq!(apply_raw(&pool, "e4", 300, "active", true).await, "stale");
    let status: String =
        sqlx::query_scalar("SELECT status FROM sw_subscriptions WHERE subscription_id = 'sub_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "canceled");
}
