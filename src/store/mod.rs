//! All SQL lives under this module.

/// `$column`, a `TIMESTAMP` of `user_sessions`, within the years chrono
/// holds (4713 BC to 200000; NULL stays NULL), wherever one is decoded: the
/// web app writes these columns itself, `'infinity'` and `'-infinity'`
/// included, and sqlx decodes a value past chrono's years (262,143) with a
/// panic. A macro, so that a statement can be a `const`. The `CASE` keeps
/// NULL (`LEAST` ignores it) and has no `ELSE $column`: that would name the
/// result `$column`, and an `ORDER BY $column` would sort by it, not by the
/// column's index.
macro_rules! within_chrono {
    ($column:literal) => {
        concat!(
            "CASE WHEN ",
            $column,
            " IS NOT NULL THEN GREATEST(LEAST(",
            $column,
            ", '200000-01-01'::timestamp), '4713-01-01 BC'::timestamp) END"
        )
    };
}
pub(crate) use within_chrono;

mod apply;
mod connections;
mod doctor;
mod events;
pub mod indexes;
pub mod limit;
mod migrate;
mod purge;
mod reconcile;
mod replay;
mod run_lock;
mod session_lookups;
mod sessions;
mod wrong_mode;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DatabaseConfig;
use connections::Connections;
use limit::Armed;

pub use apply::{Outcome, Recorded, Truth};
pub use doctor::{MigrationState, SessionColumn, TimeZones};
pub use events::{EventFilter, RecordedEvent};
pub use migrate::MIGRATE_LOCK_KEY;
pub use purge::{
    Batch, DEACTIVATED_SQL, DELETE_EVENTS_SQL, DELETE_RANGE_LOCK_TIMEOUT_SQL,
    DELETE_RANGE_SKIP_LOCKED_SQL, DueSet, EXPIRED_SQL, Edge, Estimate, PURGE_LOCK_KEY,
    PurgeConnection, RowLocks, SetSql, clamp_bounds, is_statement_timeout,
};
pub use reconcile::{RECONCILE_LOCK_KEY, ReconcileLock};
pub use sessions::{SessionRow, SessionStats, SessionStore};
pub use wrong_mode::WRONG_MODE;

/// How long a request may wait for a pooled connection before the database
/// counts as unavailable (the webhook answers 503 within 5 s).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// No statement of ours should ever take long; one that does is a symptom
/// (a lock held by the web app, an overloaded server) and is cut off.
/// (Migrations run without it, on a connection of their own.)
const STATEMENT_TIMEOUT: &str = "5s";

/// An idle pooled connection that does not answer a ping within this is
/// replaced.
const IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A pooled connection idle for less than this is handed out unchecked, as
/// the webhook's own connections are (`connections.rs`): it answered a
/// moment ago, and a ping on every acquire would double the round trips of
/// the session API's one-statement calls. A call on one that died since
/// fails and closes it ([`limit::Armed`]).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// TCP keepalive on the server's side of each connection, so that the
/// server ends the session of a worker it can no longer reach (a network
/// partition) within about a minute instead of the kernel's two hours, and
/// releases what it held (an advisory lock, a transaction's row locks).
/// Settable per session since PostgreSQL 9; ignored over a Unix socket.
const SERVER_KEEPALIVE: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
];

/// The instance's connections, one budget: `serve` opens at most
/// [`Budget::total`] connections to the database, the sqlx pool's and the
/// webhook path's together (docs/database.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The sqlx pool: a purge run and a reconcile run hold one each for
    /// their length (their locks); readiness and look-ups share the rest.
    pub pool: u32,
    /// The webhook path's own connections ([`Store::with_webhook_connections`]).
    pub webhook: u32,
}

impl Budget {
    /// What the pool keeps of a budget: one connection per run that may
    /// hold one (the purge, the reconcile), and one for everything else.
    pub const POOL_SHARE: u32 = 3;

    /// `total` connections split between the pool and the webhook path
    /// (at least 2 each).
    pub const fn of(total: u32) -> Self {
        let pool = if total >= Self::POOL_SHARE + 2 {
            Self::POOL_SHARE
        } else {
            2
        };
        let webhook = if total > pool + 2 { total - pool } else { 2 };
        Self { pool, webhook }
    }

    pub const fn total(&self) -> u32 {
        self.pool + self.webhook
    }
}

/// A pool that connects on first use, so that a server started before its
/// database still starts. `config.options` was parsed at start.
pub fn pool(config: &DatabaseConfig, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    Ok(pool_with(config.options.clone(), max_connections))
}

/// [`pool`] for connection options already parsed.
pub fn pool_with(options: PgConnectOptions, max_connections: u32) -> PgPool {
    let options = session_options(options);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // sqlx's own check of an idle connection has no limit but the whole
        // acquire's: one connection that stopped answering would fail the
        // acquire instead of being replaced. The same ping, bounded; one
        // that runs out is closed, and the next (or a new one) tried.
        .test_before_acquire(false)
        .before_acquire(|conn, idle| {
            Box::pin(async move {
                if idle.idle_for < CHECK_AFTER_IDLE {
                    return Ok(true);
                }
                limit::within_limit(IDLE_CHECK_TIMEOUT, conn.ping()).await?;
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// The settings of every connection of ours but the migrator's: the
/// statement timeout, the server's keepalive, our application name.
fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    let mut settings = vec![("statement_timeout", STATEMENT_TIMEOUT)];
    settings.extend(SERVER_KEEPALIVE);
    options.application_name("session-worker").options(settings)
}

/// Applies pending migrations, on a connection of its own with no statement
/// timeout, and makes sure every index the worker needs is there and valid.
/// Safe to run from several instances at once (src/store/migrate.rs says how).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrate::migrate_with(&pool.connect_options()).await
}

/// The store of subscription state, and the sessions it keeps in step.
#[derive(Clone, Debug)]
pub struct Store {
    /// Readiness and migrations.
    pool: PgPool,
    /// The webhook path: as many connections as the pool may open, to the
    /// same server with the same settings (connections.rs says why apart).
    connections: Arc<Connections>,
    /// Statuses that count as subscribed (`SUBSCRIBED_STATUSES`).
    subscribed_statuses: Arc<[String]>,
}

impl Store {
    /// The store on `pool`, with as many webhook connections as the pool
    /// may open (tests; `serve` sets its [`Budget`]).
    pub fn new(pool: PgPool, subscribed_statuses: Vec<String>) -> Self {
        let webhook = pool.options().get_max_connections();
        Self {
            connections: Connections::start(
                (*pool.connect_options()).clone(),
                webhook,
                connections::IDLE_TIMEOUT,
            ),
            pool,
            subscribed_statuses: subscribed_statuses.into(),
        }
    }

    /// At most `max` connections for the webhook path.
    pub fn with_webhook_connections(self, max: u32) -> Self {
        self.with_connections(max, connections::IDLE_TIMEOUT)
    }

    /// Idle webhook connections closed after `idle` (tests).
    #[doc(hidden)]
    pub fn with_webhook_idle_timeout(self, idle: Duration) -> Self {
        let max = self.connections.max();
        self.with_connections(max, idle)
    }

    fn with_connections(self, max: u32, idle: Duration) -> Self {
        let options = (*self.pool.connect_options()).clone();
        Self {
            connections: Connections::start(options, max, idle),
            ..self
        }
    }

    /// Closes the webhook path's idle connections and refuses new work; the
    /// pool is closed by its owner.
    pub async fn close(&self) {
        self.connections.close().await;
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip within [`limit::CALL_TIMEOUT`]: does the database
    /// answer? A connection that did not is closed.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        limit::within(async {
            let mut conn = Armed::acquire(&self.pool).await?;
            sqlx::query("SELECT 1").execute(conn.connection()).await?;
            conn.done();
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_budget_is_split_between_the_pool_and_the_webhook() {
        assert_eq!(
            Budget::of(8),
            Budget {
                pool: 3,
                webhook: 5
            }
        );
        assert_eq!(Budget::of(8).total(), 8);
        assert_eq!(
            Budget::of(4),
            Budget {
                pool: 2,
                webhook: 2
            }
        );
    }
}
