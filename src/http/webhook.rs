//! `POST /webhooks/stripe`: raw bytes -> signature -> event -> store -> answer.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::event;
use crate::store::Outcome;

/// Past this the answer is 503, well inside Stripe's own timeout, and Stripe
/// delivers again. The work itself is not cut short: it commits or rolls back
/// whole, and a late commit turns the retry into a duplicate.
const DEADLINE: Duration = Duration::from_millis(4500);

pub async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body larger than 1 MiB".to_owned()
        } else {
            "could not read the body".to_owned()
        };
        tracing::warn!(%status, "webhook rejected: {message}");
        ApiError::new(status, message)
    })?;

    let header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    app.verifier
        .verify(header, &body, chrono::Utc::now().timestamp())
        .map_err(|error| {
            tracing::warn!(%error, "webhook rejected: signature");
            ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
        })?;

    let event = event::parse(&body, &app.username_key).map_err(|error| {
        tracing::warn!(%error, "webhook rejected: not a Stripe event");
        ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
    })?;

    let store = app.store.clone();
    let work = tokio::spawn({
        let event = event.clone();
        async move { store.apply(&event).await }
    });
    let outcome = match tokio::time::timeout(DEADLINE, work).await {
        Ok(Ok(Ok(outcome))) => outcome,
        Ok(Ok(Err(error))) => {
            tracing::error!(event_id = %event.id, event_type = %event.kind, %error, "webhook not applied: database error");
            return Err(ApiError::unavailable());
        }
        Ok(Err(panic)) => {
            tracing::error!(event_id = %event.id, event_type = %event.kind, %panic, "webhook not applied: task failed");
            return Err(ApiError::unavailable());
        }
        Err(_) => {
            tracing::error!(event_id = %event.id, event_type = %event.kind, "webhook not applied in time: database too slow or unavailable");
            return Err(ApiError::unavailable());
        }
    };

    let (sessions_updated, sessions_skipped) = match outcome {
        Outcome::Applied {
            sessions_updated,
            sessions_skipped,
        } => (sessions_updated, sessions_skipped),
        _ => (0, 0),
    };
    tracing::info!(
        event_id = %event.id,
        event_type = %event.kind,
        outcome = outcome.as_str(),
        sessions_updated,
        sessions_skipped,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "webhook"
    );
    Ok(Json(
        json!({ "received": true, "outcome": outcome.as_str() }),
    ))
}
