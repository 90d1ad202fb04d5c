//! Every route and status of the session API, through the real router.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::*;
use crate::helpers::{add_session, checkout, now, outcome, raw_session};

#[sqlx::test]
async fn post_creates_a_session_with_the_keys_and_a_cookie(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let body = r#"{"username": "alice", "data": {"theme": "dark", "ratio": 1.50, "big": 1e+16}}"#;
    let answer = call(&app, "POST", "/sessions", Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let id = answer.json["session_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 43);
    assert_eq!(answer.json["username"], "alice");
    assert_eq!(
        answer.json["data"],
        json!({"theme": "dark", "ratio": 1.50, "big": 1e16,
               "subscribed": false, "subscription_status": "none", "subscription": null})
    );
    assert_eq!(
        answer.json["set_cookie"],
        format!("session_id={id}; Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax")
    );
    // What the app wrote is kept as written, in its order, keys last.
    let stored = raw_session(&pool, &id).await.unwrap();
    assert!(
        stored.starts_with(r#"{"theme":"dark","ratio":1.50,"big":1e+16, "subscribed""#),
        "{stored}"
    );
    assert!(answer.text.contains(r#""ratio":1.50"#), "{}", answer.text);

    let (active, lifetime_secs): (bool, f64) = sqlx::query_as(
        "SELECT is_active, extract(epoch FROM expires_at - created_at)::float8 FROM user_sessions \
         WHERE session_id = $1 AND created_at > (now() AT TIME ZONE 'UTC') - interval '1 minute'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(active);
    assert_eq!(lifetime_secs, 86_400.0);
    for field in ["created_at", "updated_at", "expires_at"] {
        let at = answer.json[field].as_str().unwrap();
        assert!(
            at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{at}"
        );
    }

    // No data at all: the keys alone.
    let answer = call(&app, "POST", "/sessions", Some(r#"{"username": "bob"}"#)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(
        answer.json["data"],
        json!({"subscribed": false, "subscription_status": "none", "subscription": null})
    );
}

#[sqlx::test]
async fn a_new_session_starts_with_the_users_subscription(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let paid = checkout("evt_paid", now(), "alice", "cus_a", Some("sub_a"));
    assert_eq!(outcome(&app, &paid).await, "applied");
    let id = create(&app, "alice", json!({"cart": []})).await;
    let answer = call(&app, "GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(answer.json["data"]["subscribed"], true);
    assert_eq!(answer.json["data"]["subscription_status"], "active");
    // Usernames match exactly.
    let other = create(&app, "Alice", json!({})).await;
    let answer = call(&app, "GET", &format!("/sessions/{other}"), None).await;
    assert_eq!(answer.json["data"]["subscribed"], false);
}

#[sqlx::test]
async fn get_answers_the_data_as_written(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let data = r#"{"big": 1e+16, "neg": -0.0, "s": "\ud800", "z": "\u0000", "n": 1.10}"#;
    add_session(
        &pool,
        "legacy-id-from-the-app",
        "alice",
        Some(data),
        60,
        true,
    )
    .await;
    let answer = call(&app, "GET", "/sessions/legacy-id-from-the-app", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text.contains(data), "{}", answer.text);
    // (serde_json's Value refuses a lone surrogate: read as text.)
    assert!(
        answer
            .text
            .contains(r#""session_id":"legacy-id-from-the-app""#)
    );

    // NULL counts as {}; text that is not JSON shows as null.
    add_session(&pool, "null-data", "alice", None, 60, true).await;
    let answer = call(&app, "GET", "/sessions/null-data", None).await;
    assert_eq!(answer.json["data"], json!({}));
    add_session(&pool, "not-json", "alice", Some("{NaN}"), 60, true).await;
    let answer = call(&app, "GET", "/sessions/not-json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["data"], Value::Null);
}

#[sqlx::test]
async fn patch_is_a_json_merge_patch_that_keeps_other_values_as_written(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let id = create(
        &app,
        "alice",
        json!({"theme": "dark", "cart": {"items": [1], "coupon": "X"}, "keep": 1}),
    )
    .await;
    sqlx::query("UPDATE user_sessions SET session_data = replace(session_data, '\"keep\":1', '\"keep\":1.10') WHERE session_id = $1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    let patch =
        r#"{"data": {"theme": null, "cart": {"coupon": null, "items": [1, 2]}, "lang": "fr"}}"#;
    let answer = call(&app, "PATCH", &format!("/sessions/{id}"), Some(patch)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.json["data"],
        json!({"cart": {"items": [1, 2]}, "keep": 1.10, "subscribed": false,
               "subscription_status": "none", "subscription": null, "lang": "fr"})
    );
    let stored = raw_session(&pool, &id).await.unwrap();
    assert!(stored.contains(r#""keep":1.10"#), "{stored}");
    assert_eq!(
        call(&app, "GET", &format!("/sessions/{id}"), None)
            .await
            .json,
        answer.json
    );
}

#[sqlx::test]
async fn the_workers_keys_are_refused_with_422(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    for key in ["subscribed", "subscription_status", "subscription"] {
        let body = json!({"username": "alice", "data": {"a": 1, key: true}}).to_string();
        let answer = call(&app, "POST", "/sessions", Some(&body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{key}");
        assert!(answer.json["error"].as_str().unwrap().contains(key));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM user_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);

    let id = create(&app, "alice", json!({"a": 1})).await;
    let before = raw_session(&pool, &id).await;
    for patch in [
        r#"{"data": {"subscribed": true}}"#,
        r#"{"data": {"b": 2, "subscription_status": null}}"#,
        r#"{"data": {"subscription": {"id": "sub_free"}}}"#,
    ] {
        let answer = call(&app, "PATCH", &format!("/sessions/{id}"), Some(patch)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}");
    }
    assert_eq!(raw_session(&pool, &id).await, before);
}

#[sqlx::test]
async fn malformed_bodies_are_400_and_large_ones_413(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let long_name = "x".repeat(51);
    let bad_posts = [
        "{".to_owned(),
        "[]".to_owned(),
        r#"{"data": {}}"#.to_owned(),
        r#"{"username": ""}"#.to_owned(),
        format!(r#"{{"username": "{long_name}"}}"#),
        r#"{"username": "alice", "data": [1]}"#.to_owned(),
        r#"{"username": "alice", "data": "text"}"#.to_owned(),
        r#"{"username": "alice", "ttl_secs": 59}"#.to_owned(),
        r#"{"username": "alice", "ttl_secs": 34560001}"#.to_owned(),
        r#"{"username": "alice", "ttl_secs": "1h"}"#.to_owned(),
        r#"{"username": "alice", "ttl": 3600}"#.to_owned(),
    ];
    for body in &bad_posts {
        let answer = call(&app, "POST", "/sessions", Some(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer.json["error"].is_string(), "{body}");
    }
    // 50 characters (not bytes) is a valid username.
    let fifty = json!({"username": "é".repeat(50)}).to_string();
    assert_eq!(
        call(&app, "POST", "/sessions", Some(&fifty)).await.status,
        StatusCode::CREATED
    );

    let id = create(&app, "alice", json!({})).await;
    for body in [
        "",
        "{}",
        r#"{"data": [1]}"#,
        r#"{"data": null}"#,
        r#"{"data": {}, "x": 1}"#,
    ] {
        let answer = call(&app, "PATCH", &format!("/sessions/{id}"), Some(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
    }

    let big = json!({"username": "alice", "data": {"blob": "x".repeat(64 * 1024)}}).to_string();
    let answer = call(&app, "POST", "/sessions", Some(&big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.json["error"].is_string());
    let big_patch = json!({"data": {"blob": "x".repeat(64 * 1024)}}).to_string();
    let answer = call(&app, "PATCH", &format!("/sessions/{id}"), Some(&big_patch)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[sqlx::test]
async fn every_route_needs_a_token(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let id = create(&app, "alice", json!({})).await;
    let session = format!("/sessions/{id}");
    let routes = [
        ("POST", "/sessions", Some(r#"{"username": "alice"}"#)),
        ("GET", session.as_str(), None),
        ("PATCH", session.as_str(), Some(r#"{"data": {"a": 1}}"#)),
        ("DELETE", session.as_str(), None),
        ("GET", "/users/alice/sessions", None),
        ("DELETE", "/users/alice/sessions", None),
    ];
    for (method, path, body) in routes {
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let answer = call_as(&app, token, method, path, body).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(answer.json, json!({"error": "unauthorized"}));
        }
    }
    // The other token of a rotation works; nothing above ended anything.
    let answer = call_as(&app, Some(OTHER_TOKEN), "GET", &session, None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[sqlx::test]
async fn without_a_token_setting_the_routes_are_404(pool: PgPool) {
    let app = crate::helpers::app(pool.clone());
    add_session(&pool, "some-session", "alice", None, 60, true).await;
    for (method, path) in [
        ("POST", "/sessions"),
        ("GET", "/sessions/some-session"),
        ("DELETE", "/sessions/some-session"),
        ("GET", "/users/alice/sessions"),
    ] {
        let answer = call(&app, method, path, Some(r#"{"username": "alice"}"#)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
}

#[sqlx::test]
async fn unknown_expired_and_ended_sessions_all_answer_the_same_404(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    add_session(&pool, "expired", "alice", Some("{}"), -1, true).await;
    add_session(&pool, "ended", "alice", Some("{}"), 60, false).await;
    let long = "x".repeat(65);
    let mut answers = Vec::new();
    for id in ["unknown", "expired", "ended", long.as_str()] {
        for (method, body) in [
            ("GET", None),
            ("PATCH", Some(r#"{"data": {"a": 1}}"#)),
            ("DELETE", None),
        ] {
            let answer = call(&app, method, &format!("/sessions/{id}"), body).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {id}");
            answers.push(answer.text);
        }
    }
    answers.dedup();
    assert_eq!(answers, [r#"{"error":"session not found"}"#]);
    // Nothing was written to them.
    assert_eq!(raw_session(&pool, "expired").await.as_deref(), Some("{}"));
}

#[sqlx::test]
async fn logout_list_and_logout_everywhere_else(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let first = create(&app, "alice", json!({"n": 1})).await;
    let second = create(&app, "alice", json!({"n": 2})).await;
    let third = create(&app, "alice", json!({"n": 3})).await;
    let bobs = create(&app, "bob", json!({})).await;
    add_session(&pool, "alice-expired", "alice", None, -1, true).await;

    let answer = call(&app, "GET", "/users/alice/sessions", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let listed: Vec<&str> = answer.json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [third.as_str(), second.as_str(), first.as_str()]);
    assert_eq!(answer.json["sessions"][0]["data"]["n"], 3);

    let answer = call(&app, "DELETE", &format!("/sessions/{third}"), None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.text, "");
    let answer = call(&app, "GET", &format!("/sessions/{third}"), None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let path = format!("/users/alice/sessions?except={first}");
    let answer = call(&app, "DELETE", &path, None).await;
    assert_eq!(answer.json, json!({"ended": 1}));
    let answer = call(&app, "GET", "/users/alice/sessions", None).await;
    assert_eq!(answer.json["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(answer.json["sessions"][0]["session_id"], first.as_str());
    assert_eq!(
        call(&app, "GET", &format!("/sessions/{bobs}"), None)
            .await
            .status,
        StatusCode::OK
    );

    let answer = call(&app, "DELETE", "/users/alice/sessions", None).await;
    assert_eq!(answer.json, json!({"ended": 1}));
    let answer = call(&app, "GET", "/users/alice/sessions", None).await;
    assert_eq!(answer.json, json!({"sessions": []}));
    // Ended, not deleted: the purge removes them later.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_sessions WHERE username = 'alice' AND is_active = FALSE \
         AND updated_at > (now() AT TIME ZONE 'UTC') - interval '1 minute'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ended, 3);
}

#[sqlx::test]
async fn ten_thousand_creations_give_ten_thousand_distinct_43_character_ids(pool: PgPool) {
    let app = api_app(pool.clone(), &[]);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..1250 {
                    ids.push(
                        create(&app, &format!("user_{}", (w * 1250 + i) % 97), json!({})).await,
                    );
                }
                ids
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            assert_eq!(id.len(), 43, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
            ids.insert(id);
        }
    }
    assert_eq!(ids.len(), 10_000);
}

/// The web app writes `user_sessions` itself: `'infinity'`, `'-infinity'`
/// and years past chrono's (262,143) are its to write. Every route answers
/// for such a session as for any other; its times read as the years chrono
/// holds at either end (4713 BC, 200000), NULL as null.
#[sqlx::test]
async fn sessions_with_infinite_times_answer_on_every_route(pool: PgPool) {
    const NEVER: &str = "+200000-01-01T00:00:00.000000Z";
    const EVER: &str = "-4712-01-01T00:00:00.000000Z";
    let sliding = api_app(pool.clone(), &[("SESSION_TOUCH_INTERVAL", "1m")]);
    let app = api_app(pool.clone(), &[]);
    add_endless_session(&pool, "endless", "alice", r#"{"n":1}"#).await;
    add_session(&pool, "far-off", "alice", Some("{}"), 60, true).await;
    set_times(&pool, "far-off", Some("290000-06-01"), None, "290000-06-01").await;
    add_session(&pool, "expired-for-good", "alice", Some("{}"), 60, true).await;
    set_times(&pool, "expired-for-good", None, None, "-infinity").await;
    add_session(&pool, "bobs-endless", "bob", Some("{}"), 60, true).await;
    set_times(&pool, "bobs-endless", Some("infinity"), None, "infinity").await;

    for app in [&sliding, &app] {
        let answer = call(app, "GET", "/sessions/endless", None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.json["data"]["n"], 1);
        assert_eq!(answer.json["created_at"], EVER);
        assert_eq!(answer.json["updated_at"], NEVER);
        assert_eq!(answer.json["expires_at"], NEVER);
        let answer = call(app, "GET", "/sessions/expired-for-good", None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    }
    // Sliding expiry never shortens a session that does not expire.
    let expires_at: String = sqlx::query_scalar(
        "SELECT expires_at::text FROM user_sessions WHERE session_id = 'endless'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(expires_at, "infinity");

    let answer = call(&app, "GET", "/users/alice/sessions", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let listed = answer.json["sessions"].as_array().unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["far-off", "endless"]);
    assert_eq!(listed[0]["created_at"], NEVER);
    assert_eq!(listed[0]["updated_at"], Value::Null);
    assert_eq!(listed[0]["expires_at"], NEVER);
    assert_eq!(listed[1]["created_at"], EVER);

    let patch = Some(r#"{"data": {"n": 2}}"#);
    let answer = call(&app, "PATCH", "/sessions/endless", patch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["data"]["n"], 2);
    assert_eq!(answer.json["created_at"], EVER);
    assert_eq!(answer.json["expires_at"], NEVER);
    let answer = call(&app, "PATCH", "/sessions/expired-for-good", patch).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);

    // Ending one counts how long it lived, from a created_at at either end.
    let answer = call(&app, "DELETE", "/sessions/bobs-endless", None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    let answer = call(&app, "DELETE", "/users/alice/sessions", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json, json!({"ended": 2}));
    let answer = call(&app, "GET", "/users/alice/sessions", None).await;
    assert_eq!(answer.json, json!({"sessions": []}));
}
