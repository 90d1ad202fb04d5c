use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use session_worker::config::{
    ConfigError, DatabaseConfig, Env, LogFormat, PurgeConfig, RulesConfig, StripeApiConfig,
};
use session_worker::settle::Settler;
use session_worker::store::Store;
use session_worker::stripe_api::{Retry, StripeApi};
use session_worker::{purge, reconcile, serve, signature, store, telemetry};

/// Keeps the subscription state of a web app's sessions (PostgreSQL table
/// user_sessions) in step with Stripe, from its signed webhooks, and purges
/// expired sessions.
///
/// Settings come from the environment: DATABASE_URL, STRIPE_WEBHOOK_SECRET,
/// PORT, HOST, WEBHOOK_TOLERANCE_SECS, SUBSCRIBED_STATUSES,
/// USERNAME_METADATA_KEY, PURGE_SCHEDULE, PURGE_BATCH_SIZE, STRIPE_SECRET_KEY,
/// STRIPE_API_BASE, RECONCILE_SCHEDULE, LOG_FORMAT, SESSION_API_TOKEN,
/// SESSION_TTL, SESSION_TOUCH_INTERVAL, SESSION_COOKIE_NAME,
/// RUST_LOG (see README.md).
#[derive(Parser)]
#[command(name = "session-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve the webhook until SIGTERM/SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Apply the events Stripe's Events API lists that were never recorded
    /// (needs STRIPE_SECRET_KEY), print what became of them, and exit.
    Reconcile {
        /// How far back: 72h, 3d, 90m... (at most 30d, as far back as Stripe
        /// keeps events).
        #[arg(long, default_value = "3d", value_parser = reconcile::parse_since)]
        since: Duration,
    },
    /// Purge expired and deactivated sessions once, now, and exit.
    Purge,
    /// Inspect and end the web app's active sessions.
    Sessions {
        #[command(subcommand)]
        command: session_worker::sessions::cli::SessionsCommand,
    },
    /// Print a valid Stripe-Signature header value for the payload in FILE
    /// (no database needed).
    Sign {
        /// The endpoint's signing secret (whsec_...).
        #[arg(long)]
        secret: String,
        /// Unix seconds to sign at [default: now].
        #[arg(long)]
        timestamp: Option<i64>,
        /// The payload to sign; - reads standard input.
        file: PathBuf,
    },
}

/// Exit status for a missing or invalid setting, as for a usage error.
const CONFIG_EXIT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sign {
        secret,
        timestamp,
        file,
    } = &cli.command
    {
        return sign(secret, *timestamp, file);
    }

    let env = Env::from_process();
    let log_format = match LogFormat::from_env(&env) {
        Ok(format) => format,
        Err(error) => return config_error(&error),
    };
    telemetry::init(log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = match cli.command {
        Command::Serve => match serve::ServeConfig::from_env(&env) {
            Ok(config) => {
                runtime.block_on(async { serve::run(config, serve::shutdown_on_signal()).await })
            }
            Err(error) => return config_error(&error),
        },
        Command::Migrate => match DatabaseConfig::from_env(&env) {
            Ok(config) => runtime.block_on(migrate(config)),
            Err(error) => return config_error(&error),
        },
        Command::Reconcile { since } => match ReconcileConfig::from_env(&env) {
            Ok(config) => runtime.block_on(reconcile_once(config, since)),
            Err(error) => return config_error(&error),
        },
        Command::Purge => match (DatabaseConfig::from_env(&env), PurgeConfig::from_env(&env)) {
            (Ok(database), Ok(purge)) => runtime.block_on(purge_once(database, purge)),
            (Err(error), _) | (_, Err(error)) => return config_error(&error),
        },
        Command::Sessions { command } => match DatabaseConfig::from_env(&env) {
            Ok(database) => runtime.block_on(session_worker::sessions::cli::run_command(
                command, database,
            )),
            Err(error) => return config_error(&error),
        },
        Command::Sign { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("session-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("session-worker: invalid setting {error}");
    ExitCode::from(CONFIG_EXIT)
}

async fn migrate(config: DatabaseConfig) -> anyhow::Result<()> {
    let pool = store::pool(&config, 1)?;
    store::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// What `reconcile` needs: no webhook secret, but an API key.
struct ReconcileConfig {
    database: DatabaseConfig,
    rules: RulesConfig,
    api: StripeApi,
}

impl ReconcileConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::from_env(env)?;
        let api_config = StripeApiConfig::from_env(env)?;
        api_config.require_key("reconcile")?;
        let api = StripeApi::from_config(&api_config)?.expect("the key is set");
        Ok(Self {
            database,
            rules: RulesConfig::from_env(env)?,
            api,
        })
    }
}

async fn reconcile_once(config: ReconcileConfig, since: Duration) -> anyhow::Result<()> {
    // One connection holds the lock for the run, one applies the events.
    let pool = store::pool(&config.database, 2)?;
    store::migrate(&pool).await?;
    let settler = Settler::new(
        Store::new(pool.clone(), config.rules.subscribed_statuses),
        Some(config.api),
        config.rules.username_metadata_key.into(),
    );
    // Ctrl-C or SIGTERM: stop between events and release the lock.
    let shutdown = serve::shutdown_on_signal();
    let outcome = reconcile::run_once(&settler, since, &Retry::RECONCILE, &shutdown).await;
    pool.close().await;
    match outcome? {
        reconcile::RunOutcome::Completed(report) => println!("{report}"),
        reconcile::RunOutcome::Skipped => {
            println!("reconcile skipped: another instance is reconciling now")
        }
    }
    Ok(())
}

async fn purge_once(database: DatabaseConfig, config: PurgeConfig) -> anyhow::Result<()> {
    let pool = store::pool(&database, 1)?;
    // Ctrl-C or SIGTERM: stop between batches and release the lock.
    let shutdown = serve::shutdown_on_signal();
    match purge::run_once(&pool, config.batch_size, &shutdown).await? {
        purge::Outcome::Completed(report) => println!(
            "purged {} sessions in {} ms",
            report.purged,
            report.elapsed.as_millis()
        ),
        purge::Outcome::Skipped => {
            println!("purge skipped: another instance is purging now")
        }
    }
    pool.close().await;
    Ok(())
}

fn sign(secret: &str, timestamp: Option<i64>, file: &PathBuf) -> ExitCode {
    let payload = if file.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer).map(|_| buffer)
    } else {
        std::fs::read(file)
    };
    match payload {
        Ok(payload) => {
            let timestamp = timestamp.unwrap_or_else(|| chrono::Utc::now().timestamp());
            println!("{}", signature::sign(secret, timestamp, &payload));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("session-worker: cannot read {}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}
