//! The session API: its routes through the real router, its races with the
//! webhook, reads in batches, and the real binary (logs, metrics, CLI, the Python client).

mod batched_reads;
mod lifetime;
mod process;
mod race;
mod routes;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use session_worker::config::Env;
use session_worker::config::sessions::SessionApiConfig;
use session_worker::http::{AppState, router};
use session_worker::sessions::SessionApi;
use sqlx::PgPool;
use tower::ServiceExt;

use crate::helpers::state;

pub const TOKEN: &str = "test-session-token-0123456789";
pub const OTHER_TOKEN: &str = "rotated-session-token-9876543210";

/// The app with the session API on (both tokens of a rotation), `settings`
/// added.
pub fn api_app(pool: PgPool, settings: &[(&str, &str)]) -> Router {
    let tokens = format!("{TOKEN},{OTHER_TOKEN}");
    let mut pairs = vec![("SESSION_API_TOKEN", tokens.as_str())];
    pairs.extend_from_slice(settings);
    let config = SessionApiConfig::from_env(&Env::from_pairs(pairs)).unwrap();
    router(AppState {
        sessions: SessionApi::new(&config, pool.clone()),
        ..state(pool)
    })
}

/// An answer: status, JSON body (`null` when empty), the body's text.
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

/// Calls `method path` with the token and `body` (JSON text).
pub async fn call(app: &Router, method: &str, path: &str, body: Option<&str>) -> Answer {
    call_as(app, Some(TOKEN), method, path, body).await
}

pub async fn call_as(
    app: &Router,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Body::from(body.unwrap_or_default().to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }))
    };
    Answer { status, json, text }
}

/// Creates a session for `username` with `data`; returns its id.
pub async fn create(app: &Router, username: &str, data: Value) -> String {
    let body = json!({ "username": username, "data": data }).to_string();
    let answer = call(app, "POST", "/sessions", Some(&body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.json["session_id"].as_str().unwrap().to_owned()
}

/// Counts the UPDATEs of `user_sessions` from now on, in `sw_test_writes`.
pub async fn count_writes(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE sw_test_writes (session_id TEXT); \
         CREATE FUNCTION sw_test_count_write() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO sw_test_writes VALUES (NEW.session_id); RETURN NEW; END $$; \
         CREATE TRIGGER sw_test_count_write AFTER UPDATE ON user_sessions \
         FOR EACH ROW EXECUTE FUNCTION sw_test_count_write();",
    )
    .execute(pool)
    .await
    .unwrap();
}

pub async fn writes(pool: &PgPool, session_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sw_test_writes WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Sets a session's times as the web app may write them itself: `'infinity'`,
/// `'-infinity'`, a year past chrono's (262,143), or `None` for NULL.
pub async fn set_times(
    pool: &PgPool,
    session_id: &str,
    created_at: Option<&str>,
    updated_at: Option<&str>,
    expires_at: &str,
) {
    sqlx::query(
        "UPDATE user_sessions \
         SET created_at = $2::timestamp, updated_at = $3::timestamp, expires_at = $4::timestamp \
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(created_at)
    .bind(updated_at)
    .bind(expires_at)
    .execute(pool)
    .await
    .unwrap();
}

/// A live session that never expires, with every time infinite: created at
/// `-infinity`, updated and expiring at `infinity`.
pub async fn add_endless_session(pool: &PgPool, session_id: &str, username: &str, data: &str) {
    crate::helpers::add_session(pool, session_id, username, Some(data), 60, true).await;
    set_times(
        pool,
        session_id,
        Some("-infinity"),
        Some("infinity"),
        "infinity",
    )
    .await;
}
