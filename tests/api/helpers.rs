//! Building signed Stripe events, sessions, and the app under test.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use session_worker::http::{AppState, SchemaReady, router};
use session_worker::signature::{Verifier, sign};
use session_worker::store::Store;
use session_worker::stripe_api::StripeApi;
use sqlx::PgPool;
use tower::ServiceExt;

pub const SECRET: &str = "whsec_test_secret";

pub fn state(pool: PgPool) -> AppState {
    AppState {
        store: Store::new(pool, vec!["active".into(), "trialing".into()]),
        api: None,
        verifier: Arc::new(Verifier::new(
            &[SecretString::from(SECRET)],
            std::time::Duration::from_secs(300),
        )),
        username_key: "username".into(),
        schema: SchemaReady::already(),
        metrics: session_worker::stats::install(),
        mode: Default::default(),
        metrics_token: None,
        sessions: None,
    }
}

pub fn app(pool: PgPool) -> Router {
    router(state(pool))
}

/// The app with `STRIPE_SECRET_KEY` set, its API at `api`.
pub fn app_with_api(pool: PgPool, api: StripeApi) -> Router {
    router(AppState {
        api: Some(api),
        ..state(pool)
    })
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Posts `body` with `signature` as the Stripe-Signature header (none if None).
pub async fn post_raw(
    app: &Router,
    body: Vec<u8>,
    signature: Option<String>,
) -> (StatusCode, Value) {
    let mut request = Request::post("/webhooks/stripe").header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
    (status, body)
}

/// Delivers `event` signed with the test secret, as Stripe would.
pub async fn deliver(app: &Router, event: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(SECRET, now(), &body);
    post_raw(app, body, Some(signature)).await
}

/// Delivers and returns the outcome, asserting a 200.
pub async fn outcome(app: &Router, event: &Value) -> String {
    let (status, body) = deliver(app, event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["outcome"].as_str().unwrap().to_owned()
}

/// Delivers as Stripe does, again after a 503, and returns the outcome of
/// the first other answer, asserting a 200.
///
/// For many deliveries at once to an instance with few connections: one
/// that waits longer than `ACQUIRE_TIMEOUT` for a connection (a loaded
/// machine) is answered 503 with nothing recorded, as the contract says, and
/// Stripe delivers it again. Tests of what such a race ends in use this, not
/// [`outcome`].
pub async fn outcome_as_stripe_retries(app: &Router, event: &Value) -> String {
    for _ in 0..20 {
        let (status, body) = deliver(app, event).await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(status, StatusCode::OK, "{body}");
            return body["outcome"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("answered 503 twenty times in a row");
}

fn envelope(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": "req_123", "idempotency_key": null },
        "type": kind,
        "data": { "object": object }
    })
}

pub fn checkout(
    id: &str,
    created: i64,
    username: &str,
    customer: &str,
    subscription: Option<&str>,
) -> Value {
    envelope(
        id,
        "checkout.session.completed",
        created,
        json!({
            "id": format!("cs_{id}"),
            "object": "checkout.session",
            "client_reference_id": username,
            "customer": customer,
            "subscription": subscription,
            "mode": if subscription.is_some() { "subscription" } else { "payment" },
            "payment_status": "paid",
            "status": "complete",
            "metadata": {},
            "amount_total": 1500,
            "currency": "usd"
        }),
    )
}

pub fn subscription(
    id: &str,
    kind: &str,
    created: i64,
    subscription: &str,
    customer: &str,
    status: &str,
    username: Option<&str>,
) -> Value {
    let metadata = match username {
        Some(name) => json!({ "username": name }),
        None => json!({}),
    };
    envelope(
        id,
        &format!("customer.subscription.{kind}"),
        created,
        json!({
            "id": subscription,
            "object": "subscription",
            "customer": customer,
            "status": status,
            "metadata": metadata,
            "cancel_at_period_end": false,
            "items": { "object": "list", "data": [
                { "id": "si_1", "object": "subscription_item", "current_period_end": created + 2_592_000,
                  "price": { "id": "price_1", "object": "price", "unit_amount": 1500 } }
            ] }
        }),
    )
}

pub fn event_of_type(id: &str, kind: &str, object: Value) -> Value {
    envelope(id, kind, now(), object)
}

/// Adds a session expiring `expires_in_minutes` from now (UTC; negative for
/// the past).
pub async fn add_session(
    pool: &PgPool,
    session_id: &str,
    username: &str,
    data: Option<&str>,
    expires_in_minutes: i32,
    active: bool,
) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, expires_at, is_active, updated_at) \
         VALUES ($1, $2, $3, (now() AT TIME ZONE 'UTC') + make_interval(mins => $4), $5, \
                 (now() AT TIME ZONE 'UTC') - interval '1 day')",
    )
    .bind(session_id)
    .bind(username)
    .bind(data)
    .bind(expires_in_minutes)
    .bind(active)
    .execute(pool)
    .await
    .unwrap();
}

pub async fn raw_session(pool: &PgPool, session_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT session_data FROM user_sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn session(pool: &PgPool, session_id: &str) -> Value {
    serde_json::from_str(
        &raw_session(pool, session_id)
            .await
            .unwrap_or_else(|| "null".into()),
    )
    .unwrap()
}

/// (subscribed, status) from the view the web app reads.
pub async fn user_status(pool: &PgPool, username: &str) -> Option<(bool, Option<String>)> {
    sqlx::query_as("SELECT subscribed, status FROM user_subscription_status WHERE username = $1")
        .bind(username)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// A pool on `pool`'s database whose connections use the time zone `zone`
/// (sqlx itself asks for UTC when it connects; a web app's driver may not).
pub async fn pool_in_zone(pool: &PgPool, zone: &'static str) -> PgPool {
    let zoned = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!("SET TIME ZONE '{zone}'")))
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let shown: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(&zoned)
        .await
        .unwrap();
    assert_eq!(shown, zone);
    zoned
}

/// A second pool on `pool`'s database, as another instance would have.
pub async fn another_instance(pool: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

/// Connections of `pool`'s database holding the advisory lock `key` (the
/// one-`bigint` form). Tests run in parallel, each in its own database of one
/// cluster: `pg_locks` shows every database's locks, so this one's only.
pub async fn advisory_lock_holders(pool: &PgPool, key: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs `attempt` until one run of it takes less than `limit`, and returns
/// that run's result.
///
/// For a test whose path depends on time passing, such as a connection
/// reused within a second going unchecked: on a loaded machine a run can
/// take longer and silently test another path, so such a run does not
/// count. Each run must be able to follow the one before.
pub async fn run_within<T>(
    limit: std::time::Duration,
    what: &str,
    mut attempt: impl AsyncFnMut() -> T,
) -> T {
    const TRIES: usize = 20;
    for _ in 0..TRIES {
        let started = std::time::Instant::now();
        let result = attempt().await;
        if started.elapsed() < limit {
            return result;
        }
    }
    panic!("no run of {what} took less than {limit:?} in {TRIES} tries");
}
