//! Liveness, readiness and metrics: cheap, and never touching a session.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState, quiet};
use crate::config::MetricsToken;
use crate::stats;

/// Render's health check and load balancers want an answer, not a wait.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn alive() -> &'static str {
    "ok"
}

pub async fn ready(State(app): State<AppState>) -> Result<&'static str, ApiError> {
    if !app.schema.is_set() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations not applied yet",
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => Ok("ready"),
        _ => Err(ApiError::unavailable()),
    }
}

pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &app.metrics_token
        && !bearer_matches(&headers, token)
    {
        stats::rejection("metrics_unauthorized");
        if let Some(left_out) = quiet::REFUSALS.admit() {
            tracing::warn!(left_out, "metrics refused: no valid bearer token");
        }
        let mut refused = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// `Authorization: Bearer <token>`, compared in constant time: both sides are
/// hashed first, so neither the token's bytes nor its length show in the
/// time taken.
fn bearer_matches(headers: &HeaderMap, token: &MetricsToken) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let expected = Sha256::digest(token.0.expose_secret().as_bytes());
    Sha256::digest(given).ct_eq(&expected).into()
}
