//! The record of received events (`sw_events`), read back for operators:
//! `session-worker events`.

use chrono::{DateTime, Utc};

use super::Store;

/// Which recorded events to list; every filter is optional.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Exactly this username.
    pub username: Option<String>,
    /// Exactly this type, or a prefix when it ends with `*`
    /// (`customer.subscription.*`).
    pub event_type: Option<String>,
    /// Exactly this outcome (`applied`, `stale`, `unknown_user`...).
    pub outcome: Option<String>,
    /// Received at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedEvent {
    pub received_at: DateTime<Utc>,
    pub event_id: String,
    pub event_type: String,
    /// `None` only while the event's own transaction runs.
    pub outcome: Option<String>,
    pub username: Option<String>,
}

impl Store {
    /// Recorded events matching `filter`, newest first (by receipt, then id).
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        let (exact_type, type_prefix) = match filter.event_type.as_deref() {
            Some(kind) => match kind.strip_suffix('*') {
                Some(prefix) => (None, Some(prefix)),
                None => (Some(kind), None),
            },
            None => (None, None),
        };
        // Plain parameters, no SQL built from input: a filter left out is
        // a NULL that matches everything.
        sqlx::query_as(
            "SELECT received_at, event_id, event_type, outcome, username FROM sw_events \
             WHERE ($1::text IS NULL OR username = $1) \
               AND ($2::text IS NULL OR event_type = $2) \
               AND ($3::text IS NULL OR starts_with(event_type, $3)) \
               AND ($4::text IS NULL OR outcome = $4) \
               AND ($5::timestamptz IS NULL OR received_at >= $5) \
             ORDER BY received_at DESC, event_id DESC LIMIT $6",
        )
        .bind(filter.username.as_deref())
        .bind(exact_type)
        .bind(type_prefix)
        .bind(filter.outcome.as_deref())
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(self.pool())
        .await
    }
}
