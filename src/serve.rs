//! `session-worker serve`: migrations, then the HTTP server and the purge
//! schedule until a signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, Env, HttpConfig, PurgeConfig, WebhookConfig};
use crate::http::{AppState, router};
use crate::purge;
use crate::signature::Verifier;
use crate::store::{self, Store};

/// Connections for the webhook path (and one for a purge while it runs):
/// enough for Stripe's bursts on a small instance, few enough to leave the
/// web app most of a small database's `max_connections`.
const POOL_SIZE: u32 = 8;

/// Everything `serve` needs, read before anything starts.
pub struct ServeConfig {
    pub database: DatabaseConfig,
    pub webhook: WebhookConfig,
    pub http: HttpConfig,
    pub purge: PurgeConfig,
}

impl ServeConfig {
    pub fn from_env(env: &Env) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            database: DatabaseConfig::from_env(env)?,
            webhook: WebhookConfig::from_env(env)?,
            http: HttpConfig::from_env(env)?,
            purge: PurgeConfig::from_env(env)?,
        })
    }
}

pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = store::pool(&config.database, POOL_SIZE)?;
    if !migrate_with_retry(&pool, &shutdown).await {
        return Ok(());
    }
    let state = AppState {
        store: Store::new(pool.clone(), config.webhook.subscribed_statuses.clone()),
        verifier: Arc::new(Verifier::new(
            &config.webhook.secrets,
            config.webhook.tolerance,
        )),
        username_key: config.webhook.username_metadata_key.clone().into(),
    };

    let listener = TcpListener::bind((config.http.host, config.http.port)).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let schedule = purge::Schedule::start(pool.clone(), &config.purge, &shutdown).await?;
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    // Also when the server failed: a purge in progress ends between batches
    // and releases its lock before the pool closes.
    if let Some(schedule) = schedule {
        schedule.stop().await;
    }
    served?;
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
