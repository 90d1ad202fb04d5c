use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use session_worker::config::{ConfigError, DatabaseConfig, Env, LogFormat, PurgeConfig};
use session_worker::{purge, serve, signature, store, telemetry};

/// Keeps the subscription state of a web app's sessions (PostgreSQL table
/// user_sessions) in step with Stripe, from its signed webhooks, and purges
/// expired sessions.
///
/// Settings come from the environment: DATABASE_URL, STRIPE_WEBHOOK_SECRET,
/// PORT, HOST, WEBHOOK_TOLERANCE_SECS, SUBSCRIBED_STATUSES,
/// USERNAME_METADATA_KEY, PURGE_SCHEDULE, PURGE_BATCH_SIZE, LOG_FORMAT,
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
    /// Purge expired and deactivated sessions once, now, and exit.
    Purge,
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
        Command::Purge => match (DatabaseConfig::from_env(&env), PurgeConfig::from_env(&env)) {
            (Ok(database), Ok(purge)) => runtime.block_on(purge_once(database, purge)),
            (Err(error), _) | (_, Err(error)) => return config_error(&error),
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
