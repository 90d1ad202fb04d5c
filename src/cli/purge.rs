//! `session-worker purge`: one purge now, then exit.

use std::process::ExitCode;

use crate::config::{DatabaseConfig, Env, PurgeConfig};
use crate::{purge, serve, store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// auto: backlog when the planner expects many due rows, else
    /// ordinary (`expires_at` windows found through the index); or one of
    /// them, always.
    #[arg(long, default_value = "auto", value_parser = purge::parse_mode)]
    pub mode: purge::ModeChoice,
    /// How the statements keep off rows others hold (either mode):
    /// skip-locked or lock-timeout [default: lock-timeout].
    #[arg(long, value_parser = purge::parse_row_locks)]
    pub row_locks: Option<store::RowLocks>,
    /// In backlog mode, the pause between ranges, as a multiple of their
    /// time (pauses are gathered until they add up to 5 ms).
    #[arg(long, default_value_t = purge::Settings::DEFAULT_PAUSE_RATIO, value_parser = purge::parse_pause_ratio)]
    pub pause_ratio: f64,
}

pub fn run(env: &Env, args: Args) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    let settings = DatabaseConfig::from_env(env)
        .and_then(|database| Ok((database, PurgeConfig::from_env(env)?)));
    match super::setting(settings) {
        Ok((database, config)) => {
            let defaults = purge::Settings::from_config(&config);
            let settings = purge::Settings {
                mode: args.mode,
                row_locks: args.row_locks.unwrap_or(defaults.row_locks),
                pause_ratio: args.pause_ratio,
                ..defaults
            };
            super::block_on(purge_once(database, settings))
        }
        Err(exit) => exit,
    }
}

async fn purge_once(database: DatabaseConfig, settings: purge::Settings) -> anyhow::Result<()> {
    let pool = store::pool(&database, 1)?;
    // Connected before the run, as `serve`'s pool is: the printed time is the
    // purge's own, and a database that cannot be reached fails here.
    drop(pool.acquire().await?);
    // Ctrl-C or SIGTERM: stop between batches and release the lock.
    let shutdown = serve::shutdown_on_signal();
    match purge::run_once(&pool, &settings, &shutdown).await? {
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
