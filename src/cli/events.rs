//! `session-worker events [--user U] [--type T] [--outcome O] [--since D]
//! [--limit N]`: what became of the events received, newest first, one a
//! line: `<received> <event id> <type> <outcome> <username or ->`.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{DatabaseConfig, Env};
use crate::store::{self, EventFilter, RecordedEvent, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this user's events (exact match, as usernames are stored).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this type; a trailing * matches a prefix
    /// (customer.subscription.*).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this outcome: applied, stale, duplicate, ignored, unknown_user...
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events received within this long: 90m, 24h, 7d.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    /// At most this many lines.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub limit: i64,
}

fn parse_since(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|error| format!("{raw:?} is not a duration like 90m, 24h or 7d ({error})"))
}

pub fn run(env: &Env, args: Args) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(DatabaseConfig::from_env(env)) {
        Ok(config) => super::block_on(list(config, args)),
        Err(exit) => exit,
    }
}

async fn list(config: DatabaseConfig, args: Args) -> anyhow::Result<()> {
    let since = match args.since {
        Some(since) => Some(chrono::Utc::now() - chrono::Duration::from_std(since)?),
        None => None,
    };
    let filter = EventFilter {
        username: args.user,
        event_type: args.event_type,
        outcome: args.outcome,
        since,
        limit: args.limit,
    };
    let pool = store::pool(&config, 1)?;
    // Read only: no migration; a database without them has no sw_events and
    // the error says so.
    let events = Store::new(pool.clone(), Vec::new()).events(&filter).await?;
    pool.close().await;
    for event in &events {
        println!("{}", line(event));
    }
    Ok(())
}

/// `<received> <event id> <type> <outcome> <username or ->`
pub fn line(event: &RecordedEvent) -> String {
    format!(
        "{} {} {} {} {}",
        event.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
        event.event_id,
        event.event_type,
        event.outcome.as_deref().unwrap_or("-"),
        event.username.as_deref().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_five_fields_and_dashes_for_what_is_unknown() {
        let event = RecordedEvent {
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 123).unwrap(),
            event_id: "evt_1".into(),
            event_type: "customer.subscription.updated".into(),
            outcome: Some("unknown_user".into()),
            username: None,
        };
        assert_eq!(
            line(&event),
            "2023-11-14T22:13:20Z evt_1 customer.subscription.updated unknown_user -"
        );
    }
}
