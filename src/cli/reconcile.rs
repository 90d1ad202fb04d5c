//! `session-worker reconcile [--since DURATION]`: apply the events Stripe's
//! Events API lists that were never recorded (src/reconcile.rs).

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigError, DatabaseConfig, Env, RulesConfig, StripeApiConfig};
use crate::settle::Settler;
use crate::store::{self, Store};
use crate::stripe_api::{Retry, StripeApi};
use crate::{reconcile, serve};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How far back: 72h, 3d, 90m... (at most 30d, as far back as Stripe
    /// keeps events).
    #[arg(long, default_value = "3d", value_parser = reconcile::parse_since)]
    pub since: Duration,
}

pub fn run(env: &Env, args: Args) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(ApiCommandConfig::from_env(env, "reconcile")) {
        Ok(config) => super::block_on(reconcile_once(config, args.since)),
        Err(exit) => exit,
    }
}

/// What the commands that apply events from Stripe's API (`reconcile`,
/// `replay`) need: no webhook secret, but an API key.
pub struct ApiCommandConfig {
    pub database: DatabaseConfig,
    pub rules: RulesConfig,
    pub api: StripeApi,
}

impl ApiCommandConfig {
    pub fn from_env(env: &Env, command: &str) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::from_env(env)?;
        let api_config = StripeApiConfig::from_env(env)?;
        api_config.require_key(command)?;
        let api = StripeApi::from_config(&api_config)?.expect("the key is set");
        Ok(Self {
            database,
            rules: RulesConfig::from_env(env)?,
            api,
        })
    }
}

async fn reconcile_once(config: ApiCommandConfig, since: Duration) -> anyhow::Result<()> {
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
