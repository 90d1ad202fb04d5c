//! A run that one instance at a time may make (the purge, the reconcile):
//! a session-level advisory lock, with one `bigint` key, held on a connection
//! of its own for the length of the run.
//!
//! The lock must not go back to the pool with the connection, or a later
//! user of that connection would hold it unknowingly and every other instance
//! would skip its runs. So the connection goes back only after
//! [`RunLock::unlock`] succeeds; dropped any other way (an error, a cancelled
//! future), the connection is closed, and closing it releases the lock, as a
//! crashed instance's does. The webhook's locks use the two-`int4` form,
//! whose key space does not overlap with this one.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

#[derive(Debug)]
pub struct RunLock {
    conn: PoolConnection<Postgres>,
    key: i64,
    /// True until the lock is known to be released (or never taken).
    locked: bool,
}

impl RunLock {
    /// The lock `key` on a connection of its own, or `None` when another
    /// instance holds it. Never waits for it.
    pub async fn try_lock(pool: &PgPool, key: i64) -> Result<Option<Self>, sqlx::Error> {
        // Counted as locked until the answer says otherwise: an error or a
        // cancellation mid-query leaves the lock's state unknown.
        let mut this = Self {
            conn: pool.acquire().await?,
            key,
            locked: true,
        };
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *this.conn)
            .await?;
        this.locked = locked;
        Ok(locked.then_some(this))
    }

    /// The connection that holds the lock, for the run's own statements.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Releases the lock, and the connection goes back to the pool. On an
    /// error the connection is closed instead, which releases the lock too.
    pub async fn unlock(mut self) -> Result<(), sqlx::Error> {
        let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut *self.conn)
            .await?;
        if released {
            self.locked = false;
        } else {
            tracing::warn!(
                key = self.key,
                "the run lock was not held at unlock; closing its connection"
            );
        }
        Ok(())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.locked {
            self.conn.close_on_drop();
        }
    }
}
