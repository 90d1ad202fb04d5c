//! What the service counts, named in one place, and the Prometheus recorder
//! that renders it on `/metrics`.
//!
//! Work records where it happens (through the `metrics` facade); with no
//! recorder installed (unit tests, `purge`), recording costs nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS: &str = "session_worker_webhook_events_total";
pub const SIGNATURE_FAILURES: &str = "session_worker_signature_failures_total";
pub const WEBHOOK_DURATION: &str = "session_worker_webhook_duration_seconds";
pub const SESSIONS_UPDATED: &str = "session_worker_sessions_updated_total";
pub const SESSIONS_SKIPPED: &str = "session_worker_sessions_skipped_total";
pub const LAST_EVENT_APPLIED: &str = "session_worker_last_event_applied_timestamp_seconds";
pub const SESSIONS_PURGED: &str = "session_worker_sessions_purged_total";
pub const PURGE_RUNS: &str = "session_worker_purge_runs_total";
pub const STRIPE_API_REQUESTS: &str = "session_worker_stripe_api_requests_total";
pub const RECONCILE_RUNS: &str = "session_worker_reconcile_runs_total";
pub const RECONCILE_EVENTS: &str = "session_worker_reconcile_events_total";
pub const LAST_PURGE_SUCCESS: &str = "session_worker_last_purge_success_timestamp_seconds";
pub const REJECTIONS: &str = "session_worker_http_rejections_total";
pub const CONNECTIONS_OPEN: &str = "session_worker_http_connections_open";
pub const CONNECTIONS_TIMED_OUT: &str = "session_worker_http_header_timeouts_total";

/// Seconds; a webhook is a few milliseconds when all is well and is cut off
/// at 4.5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (later
/// calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(WEBHOOK_DURATION.into()), LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full(crate::sessions::metrics::LIFETIME.into()),
                    crate::sessions::metrics::LIFETIME_BUCKETS,
                )
                .expect("lifetime buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full(crate::sessions::metrics::READ_BATCH.into()),
                    crate::sessions::metrics::READ_BATCH_BUCKETS,
                )
                .expect("batch buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

/// Keeps the recorder's histograms compact; the exporter leaves this to us
/// when it runs without its own HTTP listener.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    crate::sessions::metrics::describe();
    describe_counter!(
        EVENTS,
        "Webhook calls by event type and outcome (applied, stale, duplicate, ignored, unknown_user, rejected, failed)"
    );
    describe_counter!(
        SIGNATURE_FAILURES,
        "Webhook calls refused for their signature, by reason"
    );
    describe_histogram!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "Time to answer a webhook call"
    );
    describe_counter!(
        SESSIONS_UPDATED,
        "Active sessions whose subscription keys were written"
    );
    describe_counter!(
        SESSIONS_SKIPPED,
        "Active sessions left untouched because session_data is not a JSON object"
    );
    describe_gauge!(
        LAST_EVENT_APPLIED,
        Unit::Seconds,
        "Unix time of the last applied event"
    );
    describe_counter!(
        STRIPE_API_REQUESTS,
        "Stripe API attempts by call (events, subscription) and outcome (ok, not_found, refused, rate_limited, server_error, timeout, unreachable)"
    );
    describe_counter!(
        RECONCILE_RUNS,
        "Reconcile runs by outcome (completed, skipped, failed)"
    );
    describe_counter!(
        RECONCILE_EVENTS,
        "Events listed by reconcile, by outcome (applied, already_seen, stale, unknown_user, ignored, unreadable)"
    );
    describe_counter!(
        REJECTIONS,
        "HTTP requests refused before any effect, by reason (signature reasons, too_large, body_timeout, body_unreadable, busy, not_an_event, metrics_unauthorized)"
    );
    describe_gauge!(CONNECTIONS_OPEN, "HTTP connections open now");
    describe_counter!(
        CONNECTIONS_TIMED_OUT,
        "HTTP connections closed because a request head was not received within 10 s"
    );
    describe_counter!(SESSIONS_PURGED, "Sessions deleted by the purge");
    describe_counter!(
        PURGE_RUNS,
        "Purge runs by outcome (completed, skipped, failed)"
    );
    describe_gauge!(
        LAST_PURGE_SUCCESS,
        Unit::Seconds,
        "Unix time of the last purge that completed"
    );
}

/// Records a webhook call that reached an answer.
pub fn webhook(event_type: &str, outcome: &str, elapsed: Duration) {
    metrics::counter!(EVENTS, "type" => event_type.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!(WEBHOOK_DURATION).record(elapsed.as_secs_f64());
}

pub fn signature_failure(reason: &'static str) {
    metrics::counter!(SIGNATURE_FAILURES, "reason" => reason).increment(1);
}

pub fn applied(sessions_updated: u64, sessions_skipped: u64) {
    metrics::counter!(SESSIONS_UPDATED).increment(sessions_updated);
    metrics::counter!(SESSIONS_SKIPPED).increment(sessions_skipped);
    metrics::gauge!(LAST_EVENT_APPLIED).set(chrono::Utc::now().timestamp() as f64);
}

/// Records one attempt at a Stripe API call.
pub fn stripe_api(call: &'static str, outcome: &'static str) {
    metrics::counter!(STRIPE_API_REQUESTS, "call" => call, "outcome" => outcome).increment(1);
}

/// A request refused before it had any effect (every one is counted; only
/// some are logged).
pub fn rejection(reason: &'static str) {
    metrics::counter!(REJECTIONS, "reason" => reason).increment(1);
}

pub fn connections_open(open: usize) {
    metrics::gauge!(CONNECTIONS_OPEN).set(open as f64);
}

pub fn header_timeout() {
    metrics::counter!(CONNECTIONS_TIMED_OUT).increment(1);
}
