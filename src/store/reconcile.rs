//! The SQL of `reconcile`: the lock that lets one instance reconcile at a
//! time, and which listed events were recorded already.

use std::collections::HashSet;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::Store;

/// The reconcile's key for the one-`bigint` form of PostgreSQL's advisory
/// locks ("SWRECON" in ASCII). The purge has its own ("SWPURGE"); the
/// webhook's locks use the two-`int4` form, whose key space does not overlap
/// with this one.
pub const RECONCILE_LOCK_KEY: i64 = 0x0053_5752_4543_4F4E;

/// A connection holding the reconcile lock, for the length of a run.
///
/// The lock is session-level: it must not go back to the pool with the
/// connection, or a later user of that connection would hold it unknowingly
/// and every other instance would skip its runs. So the connection goes back
/// only after [`ReconcileLock::unlock`] succeeds; dropped any other way (an
/// error, a cancelled future), the connection is closed, and closing it
/// releases the lock, as a crashed instance's does.
#[derive(Debug)]
pub struct ReconcileLock {
    conn: PoolConnection<Postgres>,
    /// True until the lock is known to be released (or never taken).
    locked: bool,
}

impl ReconcileLock {
    /// The lock on a connection of its own, or `None` when another instance
    /// holds it. Never waits for it.
    pub async fn try_lock(store: &Store) -> Result<Option<Self>, sqlx::Error> {
        // Counted as locked until the answer says otherwise: an error or a
        // cancellation mid-query leaves the lock's state unknown.
        let mut this = Self {
            conn: store.pool.acquire().await?,
            locked: true,
        };
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RECONCILE_LOCK_KEY)
            .fetch_one(&mut *this.conn)
            .await?;
        this.locked = locked;
        Ok(locked.then_some(this))
    }

    /// Releases the lock, and the connection goes back to the pool. On an
    /// error the connection is closed instead, which releases the lock too.
    pub async fn unlock(mut self) -> Result<(), sqlx::Error> {
        let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(RECONCILE_LOCK_KEY)
            .fetch_one(&mut *self.conn)
            .await?;
        if released {
            self.locked = false;
        } else {
            tracing::warn!("the reconcile lock was not held at unlock; closing its connection");
        }
        Ok(())
    }
}

impl Drop for ReconcileLock {
    fn drop(&mut self) {
        if self.locked {
            self.conn.close_on_drop();
        }
    }
}

impl Store {
    /// Which of `event_ids` were recorded before (one query for a page).
    pub async fn recorded_events(
        &self,
        event_ids: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let seen: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM sw_events WHERE event_id = ANY($1)")
                .bind(event_ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(seen.into_iter().collect())
    }
}
