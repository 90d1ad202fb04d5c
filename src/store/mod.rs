//! All SQL lives under this module.

mod apply;
mod connections;
mod purge;
mod reconcile;
mod run_lock;
mod sessions;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DatabaseConfig;
use connections::Connections;

pub use apply::{Outcome, Recorded};
pub use purge::{DELETE_BATCH_SQL, PURGE_LOCK_KEY, PurgeConnection, PurgeProgress};
pub use reconcile::{RECONCILE_LOCK_KEY, ReconcileLock};
pub use sessions::{SessionRow, SessionStats, SessionStore};

/// How long a request may wait for a pooled connection before the database
/// counts as unavailable (the webhook answers 503 within 5 s).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// No statement of ours should ever take long; one that does is a symptom
/// (a lock held by the web app, an overloaded server) and is cut off.
const STATEMENT_TIMEOUT: &str = "5s";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// A pool that connects on first use, so that a server started before its
/// database still starts.
pub fn pool(config: &DatabaseConfig, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.url.expose_secret())?;
    Ok(pool_with(options, max_connections))
}

/// [`pool`] for connection options already parsed.
pub fn pool_with(options: PgConnectOptions, max_connections: u32) -> PgPool {
    let options = options
        .application_name("session-worker")
        .options([("statement_timeout", STATEMENT_TIMEOUT)]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options)
}

/// Applies pending migrations. Safe to run from several instances at once:
/// the migrator holds an advisory lock while it works.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
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
    pub fn new(pool: PgPool, subscribed_statuses: Vec<String>) -> Self {
        let connections = Connections::new(
            (*pool.connect_options()).clone(),
            pool.options().get_max_connections(),
        );
        Self {
            pool,
            connections: Arc::new(connections),
            subscribed_statuses: subscribed_statuses.into(),
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

    /// One round trip: does the database answer?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }
}
