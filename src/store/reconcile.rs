//! The SQL of `reconcile`: the lock that lets one instance reconcile at a
//! time, and which listed events were recorded already.

use std::collections::HashSet;

use super::Store;
use super::limit::{self, Armed};
use super::run_lock::RunLock;

/// The reconcile's key for the one-`bigint` form of PostgreSQL's advisory
/// locks ("SWRECON" in ASCII). The purge has its own ("SWPURGE"); the
/// webhook's locks use the two-`int4` form, whose key space does not overlap
/// with this one.
pub const RECONCILE_LOCK_KEY: i64 = 0x0053_5752_4543_4F4E;

/// A connection holding the reconcile lock, for the length of a run
/// ([`RunLock`]).
#[derive(Debug)]
pub struct ReconcileLock(RunLock);

impl ReconcileLock {
    /// The lock on a connection of its own, or `None` when another instance
    /// holds it. Never waits for it.
    pub async fn try_lock(store: &Store) -> Result<Option<Self>, sqlx::Error> {
        // Cut short, the lock's connection is closed, which releases it.
        Ok(
            limit::within(RunLock::try_lock(&store.pool, RECONCILE_LOCK_KEY))
                .await?
                .map(Self),
        )
    }

    /// Releases the lock, and the connection goes back to the pool (see
    /// [`RunLock::unlock`]).
    pub async fn unlock(self) -> Result<(), sqlx::Error> {
        limit::within(self.0.unlock()).await
    }
}

impl Store {
    /// Which of `event_ids` were recorded before (one query for a page).
    pub async fn recorded_events(
        &self,
        event_ids: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let seen: Vec<String> = limit::within(async {
            let mut conn = Armed::acquire(&self.pool).await?;
            let seen =
                sqlx::query_scalar("SELECT event_id FROM sw_events WHERE event_id = ANY($1)")
                    .bind(event_ids)
                    .fetch_all(conn.connection())
                    .await?;
            conn.done();
            Ok(seen)
        })
        .await?;
        Ok(seen.into_iter().collect())
    }
}
