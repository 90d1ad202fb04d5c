//! `session-worker serve`: listen at once, apply migrations as soon as the
//! database answers, serve until a signal, then drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, DatabaseConfig, Env, HttpConfig, WebhookConfig};
use crate::http::{AppState, SchemaReady, router};
use crate::signature::Verifier;
use crate::stats;
use crate::store::{self, Store};

/// Connections for the webhook path: each event holds one for a few
/// milliseconds, so 8 absorb Stripe's bursts on a small instance and leave
/// the web app most of a small database's `max_connections` (Render's
/// smallest plans allow 97).
pub const POOL_SIZE: u32 = 8;

/// Render waits 30 s (`maxShutdownDelaySeconds`) before SIGKILL; in-flight
/// requests get this long to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// Everything `serve` needs, read before anything starts.
pub struct ServeConfig {
    pub database: DatabaseConfig,
    pub webhook: WebhookConfig,
    pub http: HttpConfig,
}

impl ServeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::from_env(env)?,
            webhook: WebhookConfig::from_env(env)?,
            http: HttpConfig::from_env(env)?,
        })
    }
}

pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = store::pool(&config.database, POOL_SIZE)?;
    let metrics = stats::install();
    tokio::spawn(stats::upkeep(metrics.clone()));
    let schema = SchemaReady::default();
    let store = Store::new(pool.clone(), config.webhook.subscribed_statuses.clone());
    let state = AppState {
        store: store.clone(),
        verifier: Arc::new(Verifier::new(
            &config.webhook.secrets,
            config.webhook.tolerance,
        )),
        username_key: config.webhook.username_metadata_key.clone().into(),
        schema: schema.clone(),
        metrics,
    };

    let listener = TcpListener::bind((config.http.host, config.http.port)).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let migrations = tokio::spawn({
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        async move {
            if migrate_with_retry(&pool, &shutdown).await {
                schema.set();
                tracing::info!("migrations applied; ready");
            }
        }
    });

    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!(limit_s = DRAIN_LIMIT.as_secs(), "requests still in flight at the drain limit; stopping anyway"),
    }
    migrations.abort();
    store.close().await;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Migrations, retried with backoff while the database cannot be reached
/// (a service often starts before its database). Returns false when asked to
/// stop first.
async fn migrate_with_retry(pool: &sqlx::PgPool, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(250);
    loop {
        match store::migrate(pool).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "migrations not applied yet");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Cancelled on SIGTERM (Render's stop) or SIGINT (Ctrl-C).
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: finishing in-flight requests"),
            _ = terminate.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        }
        trigger.cancel();
    });
    token
}
