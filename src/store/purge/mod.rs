//! The SQL of the purge: the lock that lets one instance purge at a time,
//! the estimate that picks a run's mode, and its batches: `expires_at`
//! windows for ordinary rounds ([`windows`]), `ctid` ranges for a backlog
//! ([`range_walk`]), and the recorded events past their retention
//! ([`events`]).
//!
//! Every call on the purge's connection has a client-side time limit: the
//! server's `statement_timeout` does nothing when the server (or the network
//! to it) stops answering. A call cut off by that limit ends the run with an
//! error, and its connection is closed, never reused: an answer may still be
//! on its way on it.

mod events;
mod range_walk;
mod windows;

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::{AssertSqlSafe, PgPool};

// A call past its limit is dropped, and its connection with it: a
// [`RunLock`] closes its connection when it is dropped.
use super::limit::within_limit;
use super::run_lock::RunLock;

pub use events::DELETE_EVENTS_SQL;
pub use range_walk::{DELETE_RANGE_LOCK_TIMEOUT_SQL, DELETE_RANGE_SKIP_LOCKED_SQL, RowLocks};
pub use windows::{Batch, DEACTIVATED_SQL, DueSet, EXPIRED_SQL, Edge, SetSql, clamp_bounds};

/// The purge's key for the one-`bigint` form of PostgreSQL's advisory locks
/// ("SWPURGE" in ASCII). The webhook's locks use the two-`int4` form, whose
/// key space does not overlap with this one.
pub const PURGE_LOCK_KEY: i64 = 0x0053_5750_5552_4745;

/// How long the client waits for an answer beyond the server's own
/// `statement_timeout`, before it counts the database as not answering.
const CLIENT_MARGIN: Duration = Duration::from_secs(1);

/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// True for the error of a statement that the server's `statement_timeout`
/// cut off: too big a batch, to be tried again smaller.
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == QUERY_CANCELED)
}

/// The planner's view of the table at the start of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Sessions due (expired or deactivated), by the planner's statistics.
    pub due_rows: f64,
    /// The table's size in pages now: where a range walk ends.
    pub pages: i64,
    /// False until the table is first analyzed (by autovacuum or ANALYZE):
    /// the planner's row counts are guesses then.
    pub analyzed: bool,
    /// PostgreSQL 14 or later: a `ctid` range is read as a TID Range Scan
    /// (before, as a scan of the whole table).
    pub tid_range_scans: bool,
}

/// The connection a purge runs on, holding the purge lock ([`RunLock`]).
#[derive(Debug)]
pub struct PurgeConnection {
    lock: RunLock,
    /// The server's limit for one statement, set on this connection.
    statement_timeout: Duration,
}

impl PurgeConnection {
    /// The lock on a connection of its own, or `None` when another instance
    /// holds it. Never waits for it. Its statements get at most
    /// `statement_timeout` each from the server, and a little more from the
    /// client.
    pub async fn try_lock(
        pool: &PgPool,
        statement_timeout: Duration,
    ) -> Result<Option<Self>, sqlx::Error> {
        let limit = statement_timeout + CLIENT_MARGIN;
        // Cut off, the half-made lock is dropped and its connection closed.
        let Some(lock) = within_limit(limit, RunLock::try_lock(pool, PURGE_LOCK_KEY)).await? else {
            return Ok(None);
        };
        let mut this = Self {
            lock,
            statement_timeout,
        };
        // Reset by unlock() before the connection goes back to the pool.
        let set = format!(
            "SET statement_timeout = {}",
            statement_timeout.as_millis().max(1)
        );
        this.execute(&set).await?;
        Ok(Some(this))
    }

    fn limit(&self) -> Duration {
        self.statement_timeout + CLIENT_MARGIN
    }

    async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let limit = self.limit();
        let statement = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        within_limit(limit, statement.execute(self.lock.connection()))
            .await
            .map(drop)
    }

    /// The run's cutoff and the planner's view of the table: the database's
    /// clock, in UTC as `user_sessions` holds its timestamps (whatever the
    /// server's or the connection's `TimeZone`); how many sessions are due
    /// then and how big the table is, from the planner's statistics and the
    /// file's size: no row is read. Two statements, the clock with the
    /// table's size (each round trip counts in a round of 100 ms).
    pub async fn clock_and_estimate(&mut self) -> Result<(NaiveDateTime, Estimate), sqlx::Error> {
        let limit = self.limit();
        let (cutoff, pages, analyzed, tid_range_scans): (NaiveDateTime, i64, bool, bool) =
            within_limit(
                limit,
                sqlx::query_as(
                    "SELECT now() AT TIME ZONE 'UTC', \
                            pg_relation_size(oid) / current_setting('block_size')::bigint, \
                            reltuples >= 0, current_setting('server_version_num')::int >= 140000 \
                     FROM pg_class WHERE oid = 'user_sessions'::regclass",
                )
                .fetch_one(self.lock.connection()),
            )
            .await?;
        let plan: Vec<String> = within_limit(
            limit,
            sqlx::query_scalar(
                "EXPLAIN SELECT 1 FROM user_sessions WHERE expires_at <= $1 OR is_active = false",
            )
            .bind(cutoff)
            .fetch_all(self.lock.connection()),
        )
        .await?;
        let estimate = Estimate {
            due_rows: plan
                .first()
                .and_then(|line| planned_rows(line))
                .unwrap_or(0.0),
            pages,
            analyzed,
            tid_range_scans,
        };
        Ok((cutoff, estimate))
    }

    /// Releases the lock, and the connection goes back to the pool with the
    /// pool's own settings (see [`RunLock::unlock`]).
    pub async fn unlock(mut self) -> Result<(), sqlx::Error> {
        self.execute("RESET statement_timeout; RESET lock_timeout; RESET plan_cache_mode")
            .await?;
        let limit = self.limit();
        within_limit(limit, self.lock.unlock()).await
    }
}

/// The `rows=` of a plan's top line.
fn planned_rows(line: &str) -> Option<f64> {
    let rest = &line[line.find("rows=")? + "rows=".len()..];
    let digits: &str = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::planned_rows;

    #[test]
    fn reads_the_planned_rows_of_a_plan_line() {
        let line = "Seq Scan on user_sessions  (cost=0.00..21.00 rows=501234 width=4)";
        assert_eq!(planned_rows(line), Some(501234.0));
        assert_eq!(
            planned_rows("Result  (cost=0.00..0.01 rows=1 width=4)"),
            Some(1.0)
        );
        assert_eq!(planned_rows("no plan"), None);
    }
}
