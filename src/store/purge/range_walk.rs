//! A backlog's batch: many sessions are due, so each batch reads a range of
//! the table's pages in order (a TID Range Scan, PostgreSQL 14+) and deletes
//! the due rows it finds there, as one big `DELETE` would, page by page.
//!
//! A range is whole pages, `ctid >= '(first,0)' AND ctid < '(end,0)'`. A
//! webhook's update is a HOT update (it changes no indexed column), which
//! keeps the row on its page when the page has room: its new `ctid` is then
//! in the same range. A row that moves to a page the walk has passed stays
//! until the next round.

use chrono::NaiveDateTime;

use super::{PurgeConnection, within_limit};

/// How a range's statement keeps off the rows that others hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLocks {
    /// `FOR UPDATE SKIP LOCKED` first, then delete what it locked: never
    /// waits, but writes a lock record per row before its delete.
    SkipLocked,
    /// A plain `DELETE` under a short `lock_timeout` (one WAL record per
    /// row); a range that meets a held row within that time is done again
    /// with [`RowLocks::SkipLocked`].
    LockTimeout,
}

impl RowLocks {
    /// How long a plain `DELETE` may wait for a row the app holds.
    pub const LOCK_TIMEOUT_MS: u32 = 20;

    /// The connection's setting for this way.
    pub(super) fn setting(self) -> String {
        match self {
            Self::SkipLocked => "RESET lock_timeout".into(),
            Self::LockTimeout => format!("SET lock_timeout = {}", Self::LOCK_TIMEOUT_MS),
        }
    }
}

/// A range's due rows, each locked first and skipped when held.
/// `$1` the cutoff (UTC), `[$2, $3)` the pages.
///
/// Both range statements are a bare `DELETE`, counted by its command tag:
/// the same `DELETE` in a `WITH ... RETURNING 1` counted by a `SELECT` took
/// about twice as long over a half-due table (BENCHMARKS.md).
pub const DELETE_RANGE_SKIP_LOCKED_SQL: &str = "\
DELETE FROM user_sessions
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM user_sessions
    WHERE ctid >= format('(%s,0)', $2::bigint)::tid AND ctid < format('(%s,0)', $3::bigint)::tid
      AND (expires_at <= $1 OR is_active = false)
    FOR UPDATE SKIP LOCKED))
  AND (expires_at <= $1 OR is_active = false)";

/// A range's due rows, deleted as found. A row changed meanwhile is checked
/// again on its newest version (READ COMMITTED), so a session extended by
/// the app stays.
pub const DELETE_RANGE_LOCK_TIMEOUT_SQL: &str = "\
DELETE FROM user_sessions
WHERE ctid >= format('(%s,0)', $2::bigint)::tid AND ctid < format('(%s,0)', $3::bigint)::tid
  AND (expires_at <= $1 OR is_active = false)";

/// SQLSTATE of a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

impl PurgeConnection {
    /// Sets what [`RowLocks::LockTimeout`] needs on this connection (reset by
    /// `unlock`), for either walk.
    pub async fn prepare_row_locks(&mut self, row_locks: RowLocks) -> Result<(), sqlx::Error> {
        self.execute(&row_locks.setting()).await
    }

    /// Deletes the due rows of pages `[first, end)` in a transaction of its
    /// own; answers how many went.
    pub async fn delete_range(
        &mut self,
        cutoff: NaiveDateTime,
        first: i64,
        end: i64,
        row_locks: RowLocks,
    ) -> Result<u64, sqlx::Error> {
        let sql = match row_locks {
            RowLocks::SkipLocked => DELETE_RANGE_SKIP_LOCKED_SQL,
            RowLocks::LockTimeout => DELETE_RANGE_LOCK_TIMEOUT_SQL,
        };
        match self.range_statement(sql, cutoff, first, end).await {
            Err(error) if row_locks == RowLocks::LockTimeout && is_lock_timeout(&error) => {
                tracing::debug!(first, end, "a row in the range is held: skipping it");
                self.range_statement(DELETE_RANGE_SKIP_LOCKED_SQL, cutoff, first, end)
                    .await
            }
            result => result,
        }
    }

    async fn range_statement(
        &mut self,
        sql: &'static str,
        cutoff: NaiveDateTime,
        first: i64,
        end: i64,
    ) -> Result<u64, sqlx::Error> {
        let limit = self.limit();
        let done = within_limit(
            limit,
            sqlx::query(sql)
                .bind(cutoff)
                .bind(first)
                .bind(end)
                .execute(self.lock.connection()),
        )
        .await?;
        Ok(done.rows_affected())
    }
}

/// True for the error of a statement that waited longer than `lock_timeout`
/// for a row: a row the app holds.
pub(super) fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == LOCK_NOT_AVAILABLE)
}
