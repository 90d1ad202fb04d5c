//! An ordinary round's batch: few sessions are due, so each batch finds them
//! through the `expires_at` indexes.

use chrono::NaiveDateTime;

use super::range_walk::is_lock_timeout;
use super::{PurgeConnection, RowLocks, within_limit};

/// The batch statement, with or without `FOR UPDATE SKIP LOCKED` in its
/// index walks.
macro_rules! batch_sql {
    ($row_locks:literal) => {
        concat!(
            "WITH found AS MATERIALIZED (
    SELECT ctid, expires_at FROM (
        SELECT ctid, expires_at FROM user_sessions
        WHERE expires_at >= COALESCE($2, '-infinity') AND expires_at <= $1
        ORDER BY expires_at LIMIT $4",
            $row_locks,
            ") AS expired
    UNION ALL
    SELECT ctid, expires_at FROM (
        SELECT ctid, expires_at FROM user_sessions
        WHERE is_active = false AND expires_at >= COALESCE($3, '-infinity') AND expires_at > $1
        ORDER BY expires_at LIMIT $4",
            $row_locks,
            ") AS deactivated
    LIMIT $4),
gone AS (
    DELETE FROM user_sessions
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM found))
      AND (expires_at <= $1 OR is_active = false)
    RETURNING ctid),
stayed AS (
    SELECT expires_at FROM found WHERE NOT EXISTS (SELECT 1 FROM gone WHERE gone.ctid = found.ctid))
SELECT (SELECT count(*) FROM gone),
       (SELECT count(*) FROM found),
       COALESCE((SELECT min(expires_at) FROM stayed WHERE expires_at <= $1),
                (SELECT max(expires_at) FROM found WHERE expires_at <= $1)),
       COALESCE((SELECT min(expires_at) FROM stayed WHERE expires_at > $1),
                (SELECT max(expires_at) FROM found WHERE expires_at > $1))"
        )
    };
}

/// One batch: at most `$4` sessions that expired at `$1` (UTC) or were
/// deactivated, each found by walking an index and skipped when another
/// transaction holds it (the web app, a webhook: it goes next round).
/// Answers how many it found, how many went, and where each walk resumes.
///
/// - The two branches are disjoint, so a batch counts each row once, and each
///   walks its own index in `expires_at` order: `user_sessions_expires_at_idx`
///   from `$2`, then the partial `user_sessions_deactivated_idx` from `$3`.
///   The second branch runs only when the first finds fewer than `$4` rows.
/// - Each walk resumes where the previous batch left it: the index entries of
///   the rows already deleted stay until a vacuum, and stepping over them
///   again made each batch slower than the one before.
/// - `ORDER BY expires_at` keeps the planner on the index: without it, a
///   sequential scan that stops after `$4` matches looks cheap, and becomes a
///   scan of the whole table once the purged rows at its start are gone.
/// - `FOR UPDATE` re-checks a row changed since the scan began: a session the
///   web app has just extended is not deleted. (It sits in subqueries because
///   PostgreSQL refuses it directly under a `UNION`.)
/// - The rows go by their `ctid`, which stays theirs while this statement
///   holds their lock: a TID scan, a fifth faster in the benchmark than
///   going through the primary key (see BENCHMARKS.md). `= ANY(ARRAY(...))`
///   keeps it a TID scan whatever the statistics say.
/// - A row that the lock found updated since this statement's snapshot (it
///   moved: a new `ctid`) is not visible to that scan and stays. So the walk
///   resumes at the earliest such row rather than past it, and the run ends
///   only on a batch that *found* fewer than `$4` rows, not one that deleted
///   fewer: the next batch sees the moved row and deletes it.
/// - `stayed` is an anti-join (a hash of `gone`), not `<> ALL(ARRAY(...))`:
///   that compared every found row with every deleted one, 25 million
///   comparisons and about 60 ms in a batch of 5000.
/// - `gone` comes first in the answer so that the `DELETE` (and its
///   statement triggers) starts before `found` locks anything; a test holds
///   a batch there to move a row under it.
///
/// Public so that tests can EXPLAIN the very statement the purge runs.
pub const DELETE_BATCH_SQL: &str = batch_sql!(" FOR UPDATE SKIP LOCKED");

/// The same batch without locking its rows first, for
/// [`RowLocks::LockTimeout`]: the `DELETE` takes each row's lock itself, one
/// WAL record per row instead of two, under the connection's short
/// `lock_timeout`. A row changed since the snapshot is checked again on its
/// newest version (READ COMMITTED), so an extended session stays; one that
/// moved (a new `ctid`) is not deleted by this batch, and the walk resumes
/// at it, as above.
pub const DELETE_BATCH_LOCK_TIMEOUT_SQL: &str = batch_sql!("");

/// What a run deletes, and how far its index walks have got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Sessions that expired at or before this instant (UTC) go.
    pub expired_at: NaiveDateTime,
    /// Where each index walk resumes; `None` at the start.
    expired_from: Option<NaiveDateTime>,
    deactivated_from: Option<NaiveDateTime>,
}

impl PurgeProgress {
    pub fn new(expired_at: NaiveDateTime) -> Self {
        Self {
            expired_at,
            expired_from: None,
            deactivated_from: None,
        }
    }
}

/// What one statement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows it found due (and locked, in an index walk).
    pub found: u64,
    pub deleted: u64,
}

impl PurgeConnection {
    /// Deletes one batch (see [`DELETE_BATCH_SQL`]) in a transaction of its
    /// own and moves `progress` on. With [`RowLocks::LockTimeout`], a batch
    /// that meets a row held longer than the `lock_timeout` is done again
    /// with `SKIP LOCKED` (see [`PurgeConnection::prepare_row_locks`]).
    pub async fn delete_batch(
        &mut self,
        progress: &mut PurgeProgress,
        limit: u32,
        row_locks: RowLocks,
    ) -> Result<Batch, sqlx::Error> {
        let sql = match row_locks {
            RowLocks::SkipLocked => DELETE_BATCH_SQL,
            RowLocks::LockTimeout => DELETE_BATCH_LOCK_TIMEOUT_SQL,
        };
        match self.batch_statement(sql, progress, limit).await {
            Err(error) if row_locks == RowLocks::LockTimeout && is_lock_timeout(&error) => {
                tracing::debug!("a row in the batch is held: skipping it");
                self.batch_statement(DELETE_BATCH_SQL, progress, limit)
                    .await
            }
            result => result,
        }
    }

    async fn batch_statement(
        &mut self,
        sql: &'static str,
        progress: &mut PurgeProgress,
        limit: u32,
    ) -> Result<Batch, sqlx::Error> {
        let time_limit = self.limit();
        let (deleted, found, expired_to, deactivated_to): (
            i64,
            i64,
            Option<NaiveDateTime>,
            Option<NaiveDateTime>,
        ) = within_limit(
            time_limit,
            sqlx::query_as(sql)
                .bind(progress.expired_at)
                .bind(progress.expired_from)
                .bind(progress.deactivated_from)
                .bind(i64::from(limit))
                .fetch_one(self.lock.connection()),
        )
        .await?;
        progress.expired_from = expired_to.or(progress.expired_from);
        progress.deactivated_from = deactivated_to.or(progress.deactivated_from);
        Ok(Batch {
            found: found as u64,
            deleted: deleted as u64,
        })
    }
}
