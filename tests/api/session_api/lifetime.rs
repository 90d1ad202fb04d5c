//! Lifetimes: `ttl_secs`, SESSION_TTL, and sliding expiry on and off
//! (writes counted by a trigger).

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use super::*;

/// Seconds from now to the session's expiry.
async fn expires_in(pool: &PgPool, id: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - (now() AT TIME ZONE 'UTC'))::float8 \
         FROM user_sessions WHERE session_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// As if the session's expiry had been set `minutes` ago.
async fn age_expiry(pool: &PgPool, id: &str, minutes: i32) {
    sqlx::query(
        "UPDATE user_sessions SET expires_at = expires_at - make_interval(mins => $2) \
         WHERE session_id = $1",
    )
    .bind(id)
    .bind(minutes)
    .execute(pool)
    .await
    .unwrap();
}

fn near(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 60.0
}

#[sqlx::test]
async fn ttl_secs_and_session_ttl_set_the_lifetime_and_the_cookie(pool: PgPool) {
    let app = api_app(
        pool.clone(),
        &[("SESSION_TTL", "12h"), ("SESSION_COOKIE_NAME", "sid")],
    );
    let body = r#"{"username": "alice", "ttl_secs": 3600}"#;
    let answer = call(&app, "POST", "/sessions", Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let id = answer.json["session_id"].as_str().unwrap();
    assert!(
        answer.json["set_cookie"]
            .as_str()
            .unwrap()
            .starts_with(&format!("sid={id}; Path=/; Max-Age=3600;"))
    );
    assert!(near(expires_in(&pool, id).await, 3600.0));

    let id = create(&app, "alice", json!({})).await;
    assert!(near(expires_in(&pool, &id).await, 12.0 * 3600.0));
}

#[sqlx::test]
async fn without_sliding_expiry_a_get_never_writes(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let id = create(&app, "alice", json!({})).await;
    age_expiry(&pool, &id, 600).await;
    count_writes(&pool).await;
    let before = expires_in(&pool, &id).await;
    for _ in 0..3 {
        let answer = call(&app, "GET", &format!("/sessions/{id}"), None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(writes(&pool, &id).await, 0);
    assert!(near(expires_in(&pool, &id).await, before));
}

#[sqlx::test]
async fn sliding_expiry_writes_at_most_once_per_interval(pool: PgPool) {
    let app = api_app(pool.clone(), &[("SESSION_TOUCH_INTERVAL", "15m")]);
    let id = create(&app, "alice", json!({})).await;
    let body = r#"{"username": "alice", "ttl_secs": 7200}"#;
    let short = call(&app, "POST", "/sessions", Some(body)).await.json["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    count_writes(&pool).await;

    // Set just now: a GET does not write.
    for _ in 0..3 {
        assert_eq!(
            call(&app, "GET", &format!("/sessions/{id}"), None)
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(writes(&pool, &id).await, 0);

    // Set 20 minutes ago: the next GETs (ten at once) write once, to now +
    // the session's own lifetime.
    age_expiry(&pool, &id, 20).await;
    age_expiry(&pool, &short, 20).await;
    let (id_writes_before, short_writes_before) =
        (writes(&pool, &id).await, writes(&pool, &short).await);
    let gets = (0..10).map(|_| {
        let app = app.clone();
        let path = format!("/sessions/{id}");
        tokio::spawn(async move { call(&app, "GET", &path, None).await })
    });
    for get in gets {
        let answer = get.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    let answer = call(&app, "GET", &format!("/sessions/{short}"), None).await;
    assert_eq!(writes(&pool, &id).await - id_writes_before, 1);
    assert_eq!(writes(&pool, &short).await - short_writes_before, 1);
    assert!(near(expires_in(&pool, &id).await, 86_400.0));
    assert!(near(expires_in(&pool, &short).await, 7200.0));
    // The answer shows the new expiry.
    let shown =
        chrono::DateTime::parse_from_rfc3339(answer.json["expires_at"].as_str().unwrap()).unwrap();
    let left = (shown.timestamp() - chrono::Utc::now().timestamp()) as f64;
    assert!(near(left, 7200.0), "{left}");
}

#[sqlx::test]
async fn an_expired_session_is_not_brought_back_by_sliding(pool: PgPool) {
    let app = api_app(pool.clone(), &[("SESSION_TOUCH_INTERVAL", "15m")]);
    let id = create(&app, "alice", json!({})).await;
    age_expiry(&pool, &id, 24 * 60 + 1).await;
    let answer = call(&app, "GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(expires_in(&pool, &id).await < 0.0);
}
