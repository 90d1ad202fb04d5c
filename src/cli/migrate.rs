//! `session-worker migrate`: apply pending migrations and exit.

use std::process::ExitCode;

use crate::config::{DatabaseConfig, Env};
use crate::store;

pub fn run(env: &Env) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(DatabaseConfig::from_env(env)) {
        Ok(config) => super::block_on(migrate(config)),
        Err(exit) => exit,
    }
}

async fn migrate(config: DatabaseConfig) -> anyhow::Result<()> {
    let pool = store::pool(&config, 1)?;
    store::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}
