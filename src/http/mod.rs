//! The HTTP surface. Only this module knows axum.

mod error;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::signature::Verifier;
use crate::store::Store;

pub use error::ApiError;

/// Stripe's events are a few KB; anything near this is not one of them.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub verifier: Arc<Verifier>,
    pub username_key: Arc<str>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/stripe",
            post(webhook::receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}
