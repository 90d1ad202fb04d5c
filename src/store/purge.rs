//! The SQL of the purge: the lock that lets one instance purge at a time,
//! and one batch of deletions.

use chrono::NaiveDateTime;
use sqlx::PgPool;

use super::run_lock::RunLock;

/// The purge's key for the one-`bigint` form of PostgreSQL's advisory locks
/// ("SWPURGE" in ASCII). The webhook's locks use the two-`int4` form, whose
/// key space does not overlap with this one.
pub const PURGE_LOCK_KEY: i64 = 0x0053_5750_5552_4745;

/// One batch: at most `$4` sessions that expired at `$1` (UTC) or were
/// deactivated, each found by walking an index and skipped when another
/// transaction holds it (the web app, a webhook: it goes next round).
/// Answers how many went, and where each walk got to.
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
///   keeps it a TID scan whatever the statistics say (an `IN (...)` may
///   become a hash join over a sequential scan). A row that the lock found
///   updated since this statement's snapshot is not visible to that scan,
///   and stays until the next round; the conditions are checked again all
///   the same.
///
/// Public so that tests can EXPLAIN the very statement the purge runs.
pub const DELETE_BATCH_SQL: &str = "\
WITH gone AS (
    DELETE FROM user_sessions
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM (
            SELECT ctid FROM user_sessions
            WHERE expires_at >= COALESCE($2, '-infinity') AND expires_at <= $1
            ORDER BY expires_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS expired
        UNION ALL
        SELECT ctid FROM (
            SELECT ctid FROM user_sessions
            WHERE is_active = false AND expires_at >= COALESCE($3, '-infinity') AND expires_at > $1
            ORDER BY expires_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS deactivated
        LIMIT $4))
      AND (expires_at <= $1 OR is_active = false)
    RETURNING expires_at)
SELECT count(*),
       max(expires_at) FILTER (WHERE expires_at <= $1),
       max(expires_at) FILTER (WHERE expires_at > $1)
FROM gone";

/// What a run deletes, and how far its batches have got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Sessions that expired at or before this instant (UTC) go.
    expired_at: NaiveDateTime,
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

/// The connection a purge runs on, holding the purge lock ([`RunLock`]).
#[derive(Debug)]
pub struct PurgeConnection(RunLock);

impl PurgeConnection {
    /// The lock on a connection of its own, or `None` when another instance
    /// holds it. Never waits for it.
    pub async fn try_lock(pool: &PgPool) -> Result<Option<Self>, sqlx::Error> {
        Ok(RunLock::try_lock(pool, PURGE_LOCK_KEY).await?.map(Self))
    }

    /// The database's clock, in UTC as `user_sessions` holds its timestamps,
    /// whatever the server's or the connection's `TimeZone`.
    pub async fn now_utc(&mut self) -> Result<NaiveDateTime, sqlx::Error> {
        sqlx::query_scalar("SELECT now() AT TIME ZONE 'UTC'")
            .fetch_one(self.0.connection())
            .await
    }

    /// Deletes one batch (see [`DELETE_BATCH_SQL`]) in a transaction of its
    /// own, moves `progress` on, and returns how many sessions went.
    pub async fn delete_batch(
        &mut self,
        progress: &mut PurgeProgress,
        limit: u32,
    ) -> Result<u64, sqlx::Error> {
        let (deleted, expired_to, deactivated_to): (
            i64,
            Option<NaiveDateTime>,
            Option<NaiveDateTime>,
        ) = sqlx::query_as(DELETE_BATCH_SQL)
            .bind(progress.expired_at)
            .bind(progress.expired_from)
            .bind(progress.deactivated_from)
            .bind(i64::from(limit))
            .fetch_one(self.0.connection())
            .await?;
        progress.expired_from = expired_to.or(progress.expired_from);
        progress.deactivated_from = deactivated_to.or(progress.deactivated_from);
        Ok(deleted as u64)
    }

    /// Releases the lock, and the connection goes back to the pool (see
    /// [`RunLock::unlock`]).
    pub async fn unlock(self) -> Result<(), sqlx::Error> {
        self.0.unlock().await
    }
}
