//! `POST /webhooks/stripe`: raw bytes -> signature -> event -> [the
//! subscription from Stripe's API, when a key is set and the event needs it]
//! -> store -> answer.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::settle::{SettleError, Settler};
use crate::store::Outcome;
use crate::stripe_api::Retry;
use crate::{event, stats};

/// Past this the answer is 503, well inside Stripe's own timeout, and Stripe
/// delivers again. The work itself is not cut short: it commits or rolls back
/// whole, and a late commit turns the retry into a duplicate. API calls
/// (`Retry::WEBHOOK`) give up well before it.
const DEADLINE: Duration = Duration::from_millis(4500);

/// Label for calls refused before their type is known.
const UNKNOWN_TYPE: &str = "unknown";

pub async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let rejected = |status: StatusCode, message: String, event_type: &str| {
        tracing::warn!(%status, event_type, latency_ms = ms(started), "webhook rejected: {message}");
        stats::webhook(event_type, "rejected", started.elapsed());
        ApiError::new(status, message)
    };

    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body larger than 1 MiB"
        } else {
            "could not read the body"
        };
        rejected(status, message.to_owned(), UNKNOWN_TYPE)
    })?;

    let header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    app.verifier
        .verify(header, &body, chrono::Utc::now().timestamp())
        .map_err(|error| {
            stats::signature_failure(error.reason());
            rejected(StatusCode::BAD_REQUEST, error.to_string(), UNKNOWN_TYPE)
        })?;

    let event = event::parse(&body, &app.username_key)
        .map_err(|error| rejected(StatusCode::BAD_REQUEST, error.to_string(), UNKNOWN_TYPE))?;

    let outcome = apply(&app, &event).await.inspect_err(|_| {
        stats::webhook(&event.kind, "failed", started.elapsed());
    })?;

    let (sessions_updated, sessions_skipped) = match outcome {
        Outcome::Applied {
            sessions_updated,
            sessions_skipped,
        } => {
            stats::applied(sessions_updated, sessions_skipped);
            (sessions_updated, sessions_skipped)
        }
        _ => (0, 0),
    };
    stats::webhook(&event.kind, outcome.as_str(), started.elapsed());
    tracing::info!(
        event_id = %event.id,
        event_type = %event.kind,
        outcome = outcome.as_str(),
        sessions_updated,
        sessions_skipped,
        latency_ms = ms(started),
        "webhook"
    );
    Ok(Json(
        json!({ "received": true, "outcome": outcome.as_str() }),
    ))
}

/// Runs the store's transaction on its own task, so that an answer given at
/// the deadline (or a client that hangs up) never cancels it half way.
async fn apply(app: &AppState, event: &event::Event) -> Result<Outcome, ApiError> {
    if !app.schema.is_set() {
        tracing::warn!(event_id = %event.id, event_type = %event.kind, "webhook not applied: migrations not applied yet");
        return Err(ApiError::unavailable());
    }
    let settler = Settler::new(app.store.clone(), app.api.clone(), app.username_key.clone());
    let work = tokio::spawn({
        let event = event.clone();
        async move { settler.apply(&event, &Retry::WEBHOOK).await }
    });
    let (failure, answer) = match tokio::time::timeout(DEADLINE, work).await {
        Ok(Ok(Ok(outcome))) => return Ok(outcome),
        Ok(Ok(Err(error @ SettleError::Api(_)))) => {
            (error.to_string(), ApiError::stripe_unavailable())
        }
        Ok(Ok(Err(error))) => (error.to_string(), ApiError::unavailable()),
        Ok(Err(panic)) => (format!("task failed: {panic}"), ApiError::unavailable()),
        Err(_) => (
            "database or Stripe's API too slow or unavailable".to_owned(),
            ApiError::unavailable(),
        ),
    };
    tracing::error!(event_id = %event.id, event_type = %event.kind, "webhook not applied: {failure}");
    Err(answer)
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
