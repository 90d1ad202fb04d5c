//! An ordinary round's batch: few sessions are due, so each batch deletes a
//! window of them by `expires_at`, found through the `expires_at` indexes and
//! read as one `DELETE` of them all would read them: a Bitmap Heap Scan, each
//! heap page once, in the table's order.
//!
//! The due sessions are two sets, walked one after the other in
//! `expires_at` order: the expired ones (`expires_at <= cutoff`, the index
//! `user_sessions_expires_at_idx`) and the deactivated ones that have not
//! expired (`is_active = false AND expires_at > cutoff`, the partial index
//! `user_sessions_deactivated_idx`). A batch is two statements: where its
//! window ends ([`PurgeConnection::window_edge`], the index alone), then the
//! `DELETE` of the window's rows ([`PurgeConnection::delete_window`]).

use chrono::{NaiveDate, NaiveDateTime};

use super::range_walk::is_lock_timeout;
use super::{PurgeConnection, RowLocks, within_limit};

/// Which of the two sets of due sessions a statement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueSet {
    /// `expires_at <= cutoff`.
    Expired,
    /// `is_active = false AND expires_at > cutoff` (NULL is not false).
    Deactivated,
}

/// `expires_at` within chrono's years ([`within_chrono`], its bounds as
/// [`clamp_bounds`]). A walk that meets a clamped value still deletes the
/// row: the first window of a set has no lower bound and the last no upper
/// one, and a tie at a clamped value is open on its far side
/// ([`crate::purge`]'s window walk).
macro_rules! clamped {
    () => {
        within_chrono!("expires_at")
    };
}

/// The lowest and highest edge `clamped!` answers, as chrono holds them
/// (the literals of [`within_chrono`]): an edge at one of them stands for
/// every row beyond it as well.
pub fn clamp_bounds() -> (NaiveDateTime, NaiveDateTime) {
    let midnight = |year| {
        NaiveDate::from_ymd_opt(year, 1, 1)
            .and_then(|day| day.and_hms_opt(0, 0, 0))
            .expect("within chrono's years")
    };
    // 4713 BC is year -4712: chrono counts 1 BC as year 0.
    (midnight(-4712), midnight(200_000))
}

/// The statements of one set, `$2` the cutoff (UTC) in each.
macro_rules! set_sql {
    ($set:literal) => {
        SetSql {
            // `$1` where the walk is (inclusive; NULL at the start), `$3` a
            // batch's size. The first due value from `$1`, and the value
            // `$3` rows further: a window that ends before it holds at most
            // `$3` rows. Two index descents and `$3` index entries (an
            // index-only scan: no heap page once vacuum has marked them
            // visible). Without the `ORDER BY`, the planner may read every
            // due row and sort them.
            //
            // Each value comes back clamped into what chrono can hold
            // (`clamped!`): decoding `-infinity`, `infinity` or a year past
            // 262,143 would panic, and the purge with it.
            edge: concat!(
                "SELECT (SELECT ",
                clamped!(),
                " FROM user_sessions WHERE ",
                $set,
                " AND expires_at >= COALESCE($1, '-infinity') ORDER BY expires_at LIMIT 1),
       (SELECT ",
                clamped!(),
                " FROM user_sessions WHERE ",
                $set,
                " AND expires_at >= COALESCE($1, '-infinity') ORDER BY expires_at OFFSET $3 LIMIT 1)"
            ),
            // The window `[$1, $3]` (inclusive; NULL, unbounded), as one
            // bare `DELETE` counted by its command tag. It takes each row's
            // lock itself, one WAL record per row, under the connection's
            // short `lock_timeout`; a row changed since the statement's
            // snapshot is checked again on its newest version (READ
            // COMMITTED): an extended session stays, one that merely moved
            // (a webhook's update: a new `ctid`) goes.
            delete: concat!(
                "DELETE FROM user_sessions WHERE ",
                $set,
                " AND expires_at >= COALESCE($1, '-infinity') AND expires_at <= COALESCE($3, 'infinity')"
            ),
            // The same window, at most `$4` rows of it, each locked first
            // and skipped when another transaction holds it: for a window
            // with a held row, and for a single `expires_at` shared by more
            // rows than a batch. The rows go by their `ctid`; one that moved
            // between the snapshot and its lock is locked but not deleted
            // (its new version is not in the snapshot), so the answer says
            // how many went and how many were locked, and the walk does the
            // window again when they differ. `gone` comes first in the
            // answer so that the `DELETE` (and its statement triggers)
            // starts before `found` locks anything.
            delete_skip_locked: concat!(
                "WITH found AS MATERIALIZED (
    SELECT ctid FROM user_sessions
    WHERE ",
                $set,
                " AND expires_at >= COALESCE($1, '-infinity') AND expires_at <= COALESCE($3, 'infinity')
    ORDER BY expires_at LIMIT $4 FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM user_sessions
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM found)) AND ",
                $set,
                "
    RETURNING 1)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM found)"
            ),
        }
    };
}

/// The statements of one [`DueSet`]. Public so that tests can EXPLAIN the
/// very statements the purge runs.
#[derive(Clone, Copy, Debug)]
pub struct SetSql {
    pub edge: &'static str,
    pub delete: &'static str,
    pub delete_skip_locked: &'static str,
}

pub const EXPIRED_SQL: SetSql = set_sql!("expires_at <= $2");
pub const DEACTIVATED_SQL: SetSql = set_sql!("is_active = false AND expires_at > $2");

impl DueSet {
    pub fn sql(self) -> &'static SetSql {
        match self {
            Self::Expired => &EXPIRED_SQL,
            Self::Deactivated => &DEACTIVATED_SQL,
        }
    }
}

/// Where a set's next window starts and ends, from [`PurgeConnection::window_edge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The first due `expires_at` from where the walk is; `None`: the set
    /// is done.
    pub first: Option<NaiveDateTime>,
    /// The `expires_at` a batch's worth of rows further; `None`: fewer rows
    /// than that are left.
    pub next: Option<NaiveDateTime>,
}

/// What one statement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows it found due (and locked, with `SKIP LOCKED`).
    pub found: u64,
    pub deleted: u64,
}

impl PurgeConnection {
    /// Sets what a window walk needs on this connection (reset by `unlock`),
    /// in one round trip: `row_locks`' setting (see
    /// [`PurgeConnection::prepare_row_locks`]), and generic plans.
    ///
    /// - A custom plan, made for each batch's values, cost 1 to 2 ms a
    ///   statement (the planner looks for the index's actual lowest value,
    ///   stepping over the entries of the rows the last windows deleted):
    ///   a tenth of a 1% round. A generic plan is made once per statement
    ///   and connection (tests check that it goes through the index).
    /// - A generic plan does not lean on what the statistics say of the
    ///   batch's values: gone stale (most expired rows deleted since the
    ///   last ANALYZE, as right after a backlog purge), they made a custom
    ///   plan read a window of a few rows as a scan of the whole table.
    pub async fn prepare_windows(&mut self, row_locks: RowLocks) -> Result<(), sqlx::Error> {
        let set = format!(
            "{}; SET plan_cache_mode = force_generic_plan",
            row_locks.setting()
        );
        self.execute(&set).await
    }

    /// Where the window of `rows` due sessions of `set` from `from` on ends.
    pub async fn window_edge(
        &mut self,
        set: DueSet,
        from: Option<NaiveDateTime>,
        cutoff: NaiveDateTime,
        rows: u32,
    ) -> Result<Edge, sqlx::Error> {
        let limit = self.limit();
        let (first, next) = within_limit(
            limit,
            sqlx::query_as(set.sql().edge)
                .bind(from)
                .bind(cutoff)
                .bind(i64::from(rows))
                .fetch_one(self.lock.connection()),
        )
        .await?;
        Ok(Edge { first, next })
    }

    /// Deletes the due sessions of `set` with `from <= expires_at <= to`
    /// (`None`: unbounded) in a transaction of its own. With
    /// [`RowLocks::LockTimeout`], one plain `DELETE`, done again with
    /// `SKIP LOCKED` (at most `limit` rows) when it meets a row held longer
    /// than the `lock_timeout` (see [`PurgeConnection::prepare_row_locks`]);
    /// with [`RowLocks::SkipLocked`], that statement at once.
    pub async fn delete_window(
        &mut self,
        set: DueSet,
        (from, to): (Option<NaiveDateTime>, Option<NaiveDateTime>),
        cutoff: NaiveDateTime,
        limit: u32,
        row_locks: RowLocks,
    ) -> Result<Batch, sqlx::Error> {
        if row_locks == RowLocks::LockTimeout {
            let time_limit = self.limit();
            let plain = within_limit(
                time_limit,
                sqlx::query(set.sql().delete)
                    .bind(from)
                    .bind(cutoff)
                    .bind(to)
                    .execute(self.lock.connection()),
            )
            .await;
            match plain {
                Ok(done) => {
                    let deleted = done.rows_affected();
                    return Ok(Batch {
                        found: deleted,
                        deleted,
                    });
                }
                Err(error) if is_lock_timeout(&error) => {
                    tracing::debug!("a row in the window is held: skipping it");
                }
                Err(error) => return Err(error),
            }
        }
        let time_limit = self.limit();
        let (deleted, found): (i64, i64) = within_limit(
            time_limit,
            sqlx::query_as(set.sql().delete_skip_locked)
                .bind(from)
                .bind(cutoff)
                .bind(to)
                .bind(i64::from(limit))
                .fetch_one(self.lock.connection()),
        )
        .await?;
        Ok(Batch {
            found: found as u64,
            deleted: deleted as u64,
        })
    }
}
