//! `session-worker purge`: one purge now, then exit.

use std::process::ExitCode;

use crate::config::{DatabaseConfig, Env, PurgeConfig};
use crate::{purge, serve, store};

pub fn run(env: &Env) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    let settings = DatabaseConfig::from_env(env)
        .and_then(|database| Ok((database, PurgeConfig::from_env(env)?)));
    match super::setting(settings) {
        Ok((database, config)) => super::block_on(purge_once(database, config)),
        Err(exit) => exit,
    }
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
