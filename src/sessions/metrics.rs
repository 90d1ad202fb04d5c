//! The session API's metrics. No label ever holds a session id or a
//! username.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::store::SessionStore;

pub const CREATED: &str = "session_worker_session_api_sessions_created_total";
pub const ENDED: &str = "session_worker_session_api_sessions_ended_total";
pub const LIFETIME: &str = "session_worker_session_api_ended_session_duration_seconds";
pub const ACTIVE: &str = "session_worker_session_api_active_sessions";
pub const READS_WAITING: &str = "session_worker_session_api_reads_waiting";
pub const READ_BATCH: &str = "session_worker_session_api_read_batch_size";

/// Ids per statement of `GET /sessions/{id}`, up to its batch's limit (64).
pub const READ_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Seconds: from a quick login-logout to a month-long "remember me".
pub const LIFETIME_BUCKETS: &[f64] = &[
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
    3.0 * 86_400.0,
    7.0 * 86_400.0,
    30.0 * 86_400.0,
];

/// The gauge counts every active session (one scan of the index), so it is
/// refreshed this often and no more.
const GAUGE_EVERY: Duration = Duration::from_secs(60);
/// Until the first count succeeds (the server listens before migrations).
const GAUGE_RETRY: Duration = Duration::from_secs(1);

pub fn describe() {
    describe_counter!(CREATED, "Sessions created through the session API");
    describe_counter!(
        ENDED,
        "Sessions ended through the session API, by reason (logout, revoked)"
    );
    describe_histogram!(
        LIFETIME,
        Unit::Seconds,
        "How long sessions ended through the session API had lived"
    );
    describe_gauge!(
        ACTIVE,
        "Active sessions in user_sessions (refreshed once a minute)"
    );
    describe_gauge!(
        READS_WAITING,
        "GET /sessions/{id} requests waiting for the database"
    );
    describe_histogram!(
        READ_BATCH,
        Unit::Count,
        "Sessions read per statement by GET /sessions/{id} (reads arriving together share one)"
    );
}

/// A read waits for the database until this is dropped.
pub struct ReadWaiting(());

impl ReadWaiting {
    pub fn start() -> Self {
        metrics::gauge!(READS_WAITING).increment(1.0);
        Self(())
    }
}

impl Drop for ReadWaiting {
    fn drop(&mut self) {
        metrics::gauge!(READS_WAITING).decrement(1.0);
    }
}

pub fn read_batch(ids: usize) {
    metrics::histogram!(READ_BATCH).record(ids as f64);
}

pub fn created() {
    metrics::counter!(CREATED).increment(1);
}

/// `reason`: `logout` (DELETE /sessions/{id}) or `revoked`.
pub fn ended(reason: &'static str, lifetimes: &[Duration]) {
    metrics::counter!(ENDED, "reason" => reason).increment(lifetimes.len() as u64);
    let histogram = metrics::histogram!(LIFETIME);
    for lifetime in lifetimes {
        histogram.record(lifetime.as_secs_f64());
    }
}

/// Counts the active sessions now and then, for the gauge, until the
/// runtime stops.
pub fn spawn_gauge(store: SessionStore) {
    tokio::spawn(async move {
        let mut counted = false;
        loop {
            match store.count_live().await {
                Ok(active) => {
                    metrics::gauge!(ACTIVE).set(active as f64);
                    counted = true;
                }
                Err(error) => tracing::debug!(%error, "active sessions not counted"),
            }
            tokio::time::sleep(if counted { GAUGE_EVERY } else { GAUGE_RETRY }).await;
        }
    });
}
