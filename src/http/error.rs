//! The HTTP layer's one error type: a status and a short JSON body that never
//! carries a secret, a signature or a database detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable; nothing was recorded, retry later",
        )
    }

    /// Stripe's API did not answer what the event needs (with
    /// `STRIPE_SECRET_KEY` set): Stripe delivers again later.
    pub fn stripe_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Stripe API unavailable; nothing was recorded, retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}
