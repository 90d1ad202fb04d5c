//! Recorded event ids past their retention: the same rounds delete them in
//! batches, walking `sw_events_received_at_idx`.

use chrono::{DateTime, Utc};

use super::{Batch, PurgeConnection, within_limit};

/// At most `$2` events received before `$1`, from `$3` on in
/// `received_at` order (where the previous batch got to: the index entries
/// of deleted rows stay until a vacuum). An event id is written once and
/// never updated, so nothing holds its row for long; `SKIP LOCKED` all the
/// same, so that the purge never waits.
pub const DELETE_EVENTS_SQL: &str = "\
WITH found AS MATERIALIZED (
    SELECT ctid, received_at FROM sw_events
    WHERE received_at < $1 AND received_at >= COALESCE($3, '-infinity')
    ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM sw_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM found))
    RETURNING 1)
SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM gone),
       (SELECT max(received_at) FROM found)";

impl PurgeConnection {
    /// Deletes one batch of events received before `before`, from `from`
    /// on; moves `from` on.
    pub async fn delete_events(
        &mut self,
        before: DateTime<Utc>,
        from: &mut Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Batch, sqlx::Error> {
        let time_limit = self.limit();
        let (found, deleted, to): (i64, i64, Option<DateTime<Utc>>) = within_limit(
            time_limit,
            sqlx::query_as(DELETE_EVENTS_SQL)
                .bind(before)
                .bind(i64::from(limit))
                .bind(*from)
                .fetch_one(self.lock.connection()),
        )
        .await?;
        *from = to.or(*from);
        Ok(Batch {
            found: found as u64,
            deleted: deleted as u64,
        })
    }
}
