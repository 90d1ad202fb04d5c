//! The HTTP surface. Only this module knows axum.

mod error;
mod health;
mod intake;
mod quiet;
pub mod server;
mod sessions;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use axum::http::Request;
use axum::routing::{get, post};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::ServiceBuilderExt;
use tower_http::request_id::MakeRequestUuid;
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_http::trace::TraceLayer;

use crate::config::{MetricsToken, StripeMode};
use crate::signature::Verifier;
use crate::store::Store;
use crate::stripe_api::StripeApi;

pub use error::ApiError;
pub use intake::MAX_BODY_BYTES;

/// A request body not whole this long after its head is answered 408 (the
/// head itself has as long: [`server::HEADER_TIMEOUT`]).
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    /// Set with `STRIPE_SECRET_KEY`: the truth behind invoices and ties.
    pub api: Option<StripeApi>,
    pub verifier: Arc<Verifier>,
    pub username_key: Arc<str>,
    pub schema: SchemaReady,
    pub metrics: PrometheusHandle,
    /// `STRIPE_MODE`: events of the other mode are recorded, not applied.
    pub mode: StripeMode,
    /// `METRICS_TOKEN`: when set, `/metrics` needs it.
    pub metrics_token: Option<MetricsToken>,
    /// The session API; `None` (its routes absent) without SESSION_API_TOKEN.
    pub sessions: Option<crate::sessions::SessionApi>,
}

/// Set once migrations are applied; until then webhooks and `/readyz` answer
/// 503 (the server listens before its database is reachable).
#[derive(Clone, Debug, Default)]
pub struct SchemaReady(Arc<AtomicBool>);

impl SchemaReady {
    pub fn already() -> Self {
        let ready = Self::default();
        ready.set();
        ready
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub fn router(state: AppState) -> Router {
    // Outermost first: an id for the request, a span that carries it, and the
    // id echoed on the response.
    let request_layers = tower::ServiceBuilder::new()
        .set_x_request_id(MakeRequestUuid)
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %crate::sessions::mask_path(request.uri().path()), request_id)
        })
        // Handlers log their own failures once; a line per 5xx here would
        // double them, and under a flood of shed requests flood the log.
        .on_failure(()))
        .propagate_x_request_id()
        .layer(RequestBodyDeadlineLayer::new(BODY_DEADLINE));

    Router::new()
        .route(
            "/webhooks/stripe",
            post(webhook::receive).layer(Extension(Arc::new(intake::BodyBudget::default()))),
        )
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(sessions::routes(state.sessions.clone()))
        .with_state(state)
        .layer(request_layers)
}
