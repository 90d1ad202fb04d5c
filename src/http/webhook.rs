//! `POST /webhooks/stripe`: signature header -> raw bytes -> signature ->
//! event -> [the subscription from Stripe's API, when a key is set and the
//! event needs it] -> store -> answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::intake::{BodyBudget, BodyError};
use super::{ApiError, AppState, quiet};
use crate::settle::{SettleError, Settler};
use crate::signature::{SignatureError, parse_header};
use crate::store::{Outcome, WRONG_MODE};
use crate::stripe_api::Retry;
use crate::{event, stats};

/// Past this, counted from the start of the request (the wait for room and
/// the body's upload included), the answer is 503, well inside Stripe's own timeout, and Stripe
/// delivers again. The work itself is not cut short: it commits or rolls back
/// whole, and a late commit turns the retry into a duplicate. API calls
/// (`Retry::WEBHOOK`) give up well before it.
const DEADLINE: Duration = Duration::from_millis(4500);

/// Label for calls refused before their type is known.
const UNKNOWN_TYPE: &str = "unknown";

/// Head (signature header, declared size) -> body, once there is room for
/// it -> signature -> event -> mode -> store -> answer. A request refused
/// on its head is answered without its body being read.
pub async fn receive(
    State(app): State<AppState>,
    Extension(budget): Extension<Arc<BodyBudget>>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let rejected = |status: StatusCode, reason: &'static str, message: String| {
        stats::rejection(reason);
        stats::webhook(UNKNOWN_TYPE, "rejected", started.elapsed());
        if let Some(left_out) = quiet::REFUSALS.admit() {
            tracing::warn!(%status, reason, left_out, latency_ms = ms(started), "webhook rejected: {message}");
        }
        ApiError::new(status, message)
    };
    let bad_signature = |error: SignatureError| {
        stats::signature_failure(error.reason());
        rejected(StatusCode::BAD_REQUEST, error.reason(), error.to_string())
    };

    let (head, body) = request.into_parts();
    let header = parse_header(
        head.headers
            .get("stripe-signature")
            .map(|value| value.as_bytes()),
    )
    .map_err(bad_signature)?;
    // A timestamp outside the tolerance can never verify: refused before its
    // body takes any room in the budget.
    app.verifier
        .check_fresh(&header, chrono::Utc::now().timestamp())
        .map_err(bad_signature)?;

    let body = budget.read(body).await.map_err(|error| {
        let (status, reason, message) = match error {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "body larger than 1 MiB",
            ),
            BodyError::TimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "body not received in time",
            ),
            BodyError::Unreadable => (
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "could not read the body",
            ),
            BodyError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many requests in progress; retry later",
            ),
        };
        rejected(status, reason, message.to_owned())
    })?;

    app.verifier
        .verify_parsed(&header, &body.bytes, chrono::Utc::now().timestamp())
        .map_err(bad_signature)?;

    let event = event::parse(&body.bytes, &app.username_key)
        .map_err(|error| rejected(StatusCode::BAD_REQUEST, "not_an_event", error.to_string()))?;
    // The event is all that is needed from here: the body's room goes back.
    drop(body);

    if !app.mode.admits(event.livemode) {
        return record_wrong_mode(&app, &event, started).await;
    }

    let outcome = apply(&app, &event, started).await.inspect_err(|_| {
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

/// An event of the other mode than `STRIPE_MODE`: recorded, answered 200 so
/// that Stripe does not deliver it again, and nothing else.
async fn record_wrong_mode(
    app: &AppState,
    event: &event::Event,
    started: Instant,
) -> Result<Json<Value>, ApiError> {
    if !app.schema.is_set() {
        return Err(ApiError::unavailable());
    }
    match tokio::time::timeout(left(started), app.store.record_wrong_mode(event)).await {
        Ok(Ok(())) => {}
        failed => {
            let failure = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "database too slow or unavailable".to_owned(),
            };
            stats::webhook(&event.kind, "failed", started.elapsed());
            if let Some(left_out) = quiet::UNAVAILABLE.admit() {
                tracing::error!(event_id = %event.id, event_type = %event.kind, left_out, "wrong-mode event not recorded: {failure}");
            }
            return Err(ApiError::unavailable());
        }
    }
    stats::webhook(&event.kind, WRONG_MODE, started.elapsed());
    tracing::info!(
        event_id = %event.id,
        event_type = %event.kind,
        outcome = WRONG_MODE,
        livemode = event.livemode,
        stripe_mode = app.mode.as_str(),
        latency_ms = ms(started),
        "webhook"
    );
    Ok(Json(json!({ "received": true, "outcome": WRONG_MODE })))
}

/// Runs the store's transaction on its own task, so that an answer given at
/// the deadline (or a client that hangs up) never cancels it half way.
async fn apply(
    app: &AppState,
    event: &event::Event,
    started: Instant,
) -> Result<Outcome, ApiError> {
    if !app.schema.is_set() {
        if let Some(left_out) = quiet::UNAVAILABLE.admit() {
            tracing::warn!(event_id = %event.id, event_type = %event.kind, left_out, "webhook not applied: migrations not applied yet");
        }
        return Err(ApiError::unavailable());
    }
    let settler = Settler::new(app.store.clone(), app.api.clone(), app.username_key.clone());
    let work = tokio::spawn({
        let event = event.clone();
        async move { settler.apply(&event, &Retry::WEBHOOK).await }
    });
    let (failure, answer) = match tokio::time::timeout(left(started), work).await {
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
    if let Some(left_out) = quiet::UNAVAILABLE.admit() {
        tracing::error!(event_id = %event.id, event_type = %event.kind, left_out, "webhook not applied: {failure}");
    }
    Err(answer)
}

/// What is left of [`DEADLINE`] since the request began: the wait for room
/// in the body budget and the body's upload count too, so that a 503 still
/// comes within 5 s of the request.
fn left(started: Instant) -> Duration {
    DEADLINE.saturating_sub(started.elapsed())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
