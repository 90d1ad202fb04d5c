//! `session-worker replay EVENT_ID...`: each event fetched from Stripe's API
//! (`GET /v1/events/{id}`) and applied again through the webhook's path
//! ([`Settler::apply_again`]), under the ordering rules: a replay never moves
//! a subscription backwards. One line per event: `<id> <type> <outcome>`.

use std::process::ExitCode;

use super::reconcile::ApiCommandConfig;
use crate::config::Env;
use crate::event;
use crate::settle::Settler;
use crate::store::{self, Store};
use crate::stripe_api::{Retry, StripeApiError};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Event ids (evt_...), as `events` or Stripe's dashboard shows them;
    /// Stripe keeps events for 30 days.
    #[arg(required = true, value_name = "EVENT_ID")]
    pub event_ids: Vec<String>,
}

pub fn run(env: &Env, args: Args) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(ApiCommandConfig::from_env(env, "replay")) {
        Ok(config) => super::block_on(replay(config, args.event_ids)),
        Err(exit) => exit,
    }
}

async fn replay(config: ApiCommandConfig, ids: Vec<String>) -> anyhow::Result<()> {
    let pool = store::pool(&config.database, 1)?;
    let settler = Settler::new(
        Store::new(pool.clone(), config.rules.subscribed_statuses),
        Some(config.api),
        config.rules.username_metadata_key.into(),
    );
    let mut failed = 0;
    for id in &ids {
        match replay_one(&settler, id).await {
            Ok(line) => println!("{line}"),
            Err(why) => {
                failed += 1;
                println!("{id} not replayed: {why}");
            }
        }
    }
    pool.close().await;
    if failed > 0 {
        anyhow::bail!("{failed} of {} events not replayed", ids.len());
    }
    Ok(())
}

/// `<id> <type> <outcome>`, or why not.
async fn replay_one(settler: &Settler, id: &str) -> Result<String, String> {
    let api = settler.api().expect("replay has an API key");
    let body = api
        .event(id, &Retry::RECONCILE)
        .await
        .map_err(|error| match error {
            StripeApiError::NotFound(_) => {
                "not found in Stripe's API (wrong id, another account or mode, or older than 30 days)"
                    .to_owned()
            }
            other => other.to_string(),
        })?;
    let event = event::parse(&body, settler.username_key()).map_err(|error| error.to_string())?;
    if event.id != id {
        return Err(format!("the API answered event {}", event.id));
    }
    let outcome = settler
        .apply_again(&event, &Retry::RECONCILE)
        .await
        .map_err(|error| error.to_string())?;
    Ok(format!("{} {} {}", event.id, event.kind, outcome.as_str()))
}
