//! `session-worker serve`: listen at once, apply migrations as soon as the
//! database answers, then run the purge (and reconcile) schedules; serve
//! until a signal, then drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::sessions::SessionApiConfig;
use crate::config::{
    ConfigError, CronSchedule, DatabaseConfig, Env, HttpConfig, MetricsToken, PurgeConfig,
    StripeApiConfig, StripeMode, WebhookConfig, reconcile_schedule,
};
use crate::http::{AppState, SchemaReady, router, server};
use crate::schedule::Schedule;
use crate::sessions::SessionApi;
use crate::settle::Settler;
use crate::signature::Verifier;
use crate::stats;
use crate::store::{self, Store};
use crate::stripe_api::Retry;
use crate::stripe_api::StripeApi;
use crate::{purge, reconcile};

/// Connections the instance opens at most, one budget ([`store::Budget`]):
/// 5 for the webhook path (each event holds one for a few milliseconds, so
/// they absorb Stripe's bursts on a small instance), 3 for the pool (one
/// each for a purge or a reconcile while it runs, one for readiness and
/// look-ups). That leaves the web app most of a small database's
/// `max_connections` (Render's smallest plans allow 97). The session API's
/// reads, when it is on, have one more of their own (`session_lookups`).
pub const POOL_SIZE: u32 = 8;

/// Render sends SIGKILL this long after SIGTERM (`maxShutdownDelaySeconds`
/// in render.yaml).
const RENDER_KILL: Duration = Duration::from_secs(30);

/// In-flight requests get this long to finish (a webhook needs 4.5 s at
/// most). With the two limits below, the process is gone 25 s after SIGTERM
/// at most: 5 s to spare before Render's SIGKILL.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// After the drain, the schedules and connections get this long to stop.
const WIND_DOWN_LIMIT: Duration = Duration::from_secs(4);

/// Last, the runtime waits this long for its blocking tasks (a DNS lookup of
/// a database host that does not answer) before the process exits.
pub const RUNTIME_SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

// The whole stop ends at least 5 s before Render's SIGKILL; checked when
// compiling, so a limit raised past it does not build.
const _: () = assert!(
    DRAIN_LIMIT.as_secs() + WIND_DOWN_LIMIT.as_secs() + RUNTIME_SHUTDOWN_LIMIT.as_secs() + 5
        <= RENDER_KILL.as_secs()
);

/// How far back a scheduled reconcile looks, as `reconcile` does by default.
const RECONCILE_SINCE: Duration = Duration::from_secs(3 * 24 * 3600);

/// Everything `serve` needs, read before anything starts.
pub struct ServeConfig {
    pub database: DatabaseConfig,
    pub webhook: WebhookConfig,
    pub http: HttpConfig,
    /// Built at start, so that a bad setting stops it there; `None` without
    /// `STRIPE_SECRET_KEY`.
    pub stripe_api: Option<StripeApi>,
    pub purge: PurgeConfig,
    /// `RECONCILE_SCHEDULE`; set only with `STRIPE_SECRET_KEY`.
    pub reconcile_schedule: Option<CronSchedule>,
    pub mode: StripeMode,
    pub metrics_token: Option<MetricsToken>,
    pub sessions: SessionApiConfig,
}

impl ServeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_config = StripeApiConfig::from_env(env)?;
        let reconcile_schedule = reconcile_schedule(env)?;
        if reconcile_schedule.is_some() {
            api_config.require_key("RECONCILE_SCHEDULE")?;
        }
        let stripe_api = StripeApi::from_config(&api_config)?;
        Ok(Self {
            database: DatabaseConfig::from_env(env)?,
            webhook: WebhookConfig::from_env(env)?,
            http: HttpConfig::from_env(env)?,
            stripe_api,
            purge: PurgeConfig::from_env(env)?,
            reconcile_schedule,
            mode: StripeMode::from_env(env)?,
            metrics_token: MetricsToken::from_env(env)?,
            sessions: SessionApiConfig::from_env(env)?,
        })
    }
}

pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let budget = store::Budget::of(POOL_SIZE);
    let pool = store::pool(&config.database, budget.pool)?;
    let metrics = stats::install();
    tokio::spawn(stats::upkeep(metrics.clone()));
    let schema = SchemaReady::default();
    let store = Store::new(pool.clone(), config.webhook.subscribed_statuses.clone())
        .with_webhook_connections(budget.webhook);
    let state = AppState {
        store: store.clone(),
        api: config.stripe_api.clone(),
        verifier: Arc::new(Verifier::new(
            &config.webhook.secrets,
            config.webhook.tolerance,
        )),
        username_key: config.webhook.username_metadata_key.clone().into(),
        schema: schema.clone(),
        metrics,
        mode: config.mode,
        metrics_token: config.metrics_token.clone(),
        sessions: SessionApi::new(&config.sessions, pool.clone()),
    };
    if let Some(sessions) = &state.sessions {
        crate::sessions::metrics::spawn_gauge(sessions.store.clone());
    }

    let schedules = Schedules {
        purge: config.purge,
        reconcile: config
            .reconcile_schedule
            .zip(config.stripe_api.clone())
            .map(|(cron, api)| {
                let settler = Settler::new(
                    store.clone(),
                    Some(api),
                    config.webhook.username_metadata_key.clone().into(),
                );
                (cron, settler)
            }),
    };

    let listener = TcpListener::bind((config.http.host, config.http.port)).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    // Schedules start once the schema is there; stopped after the server.
    let background = tokio::spawn({
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        async move {
            if !migrate_with_retry(&pool, &shutdown).await {
                return Vec::new();
            }
            schema.set();
            tracing::info!("migrations applied; ready");
            start_schedules(pool, schedules, &shutdown).await
        }
    });

    let server = server::serve(listener, router(state), shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let served = tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!(limit_s = DRAIN_LIMIT.as_secs(), "requests still in flight at the drain limit; stopping anyway");
            Ok(())
        }
    };
    // Also when the server failed: a purge or reconcile in progress stops
    // between steps and releases its lock before the pool closes.
    shutdown.cancel();
    // Bounded whatever the database does (a round stuck on a connection
    // that stopped answering, a pool that waits for it): Render's SIGKILL
    // comes 30 s after SIGTERM.
    let wind_down = async {
        match tokio::time::timeout(Duration::from_secs(2), background).await {
            Ok(Ok(schedules)) => {
                for schedule in schedules {
                    schedule.stop().await;
                }
            }
            _ => tracing::warn!("migrations still running at shutdown; abandoned"),
        }
        store.close().await;
        pool.close().await;
    };
    if tokio::time::timeout(WIND_DOWN_LIMIT, wind_down)
        .await
        .is_err()
    {
        tracing::warn!(
            limit_s = WIND_DOWN_LIMIT.as_secs(),
            "a purge or reconcile round, or a database call, still running at shutdown; abandoned"
        );
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// What runs on a schedule inside `serve`.
struct Schedules {
    purge: PurgeConfig,
    reconcile: Option<(CronSchedule, Settler)>,
}

/// Starts the schedules that are on; one that fails to start is logged and
/// the server goes on without it.
async fn start_schedules(
    pool: sqlx::PgPool,
    schedules: Schedules,
    shutdown: &CancellationToken,
) -> Vec<Schedule> {
    let mut started = Vec::new();
    match purge::schedule(pool, &schedules.purge, shutdown).await {
        Ok(Some(schedule)) => started.push(schedule),
        Ok(None) => {}
        Err(error) => tracing::error!(%error, "purge schedule did not start"),
    }
    if let Some((cron, settler)) = schedules.reconcile {
        let settler = Arc::new(settler);
        let schedule = Schedule::start("reconcile", &cron, shutdown, move |stop| {
            let settler = settler.clone();
            // Errors are logged by run_once; the next round runs.
            async move {
                let _ =
                    reconcile::run_once(&settler, RECONCILE_SINCE, &Retry::RECONCILE, &stop).await;
            }
        })
        .await;
        match schedule {
            Ok(schedule) => started.push(schedule),
            Err(error) => tracing::error!(%error, "reconcile schedule did not start"),
        }
    }
    started
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
