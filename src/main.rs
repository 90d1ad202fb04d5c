use std::process::ExitCode;

use clap::{Parser, Subcommand};
use session_worker::cli;
use session_worker::config::Env;

/// Keeps the subscription state of a web app's sessions (PostgreSQL table
/// user_sessions) in step with Stripe, from its signed webhooks, and purges
/// expired sessions.
///
/// Settings come from the environment: DATABASE_URL, STRIPE_WEBHOOK_SECRET,
/// PORT, HOST, WEBHOOK_TOLERANCE_SECS, SUBSCRIBED_STATUSES,
/// USERNAME_METADATA_KEY, PURGE_SCHEDULE, PURGE_BATCH_SIZE, EVENT_RETENTION,
/// STRIPE_SECRET_KEY, STRIPE_API_BASE, STRIPE_MODE, RECONCILE_SCHEDULE,
/// METRICS_TOKEN, SESSION_API_TOKEN, SESSION_TTL, SESSION_TOUCH_INTERVAL,
/// SESSION_COOKIE_NAME, LOG_FORMAT, RUST_LOG (see docs/settings.md).
#[derive(Parser)]
#[command(name = "session-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each one's code is in src/cli/<name>.rs.
#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve the webhook until SIGTERM/SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Apply the events Stripe's Events API lists that were never recorded
    /// (needs STRIPE_SECRET_KEY), print what became of them, and exit.
    Reconcile(cli::reconcile::Args),
    /// Purge expired and deactivated sessions (and events past
    /// EVENT_RETENTION) once, now, and exit. docs/purge.md explains the
    /// modes and the pacing.
    Purge(cli::purge::Args),
    /// Inspect and end the web app's active sessions.
    Sessions {
        #[command(subcommand)]
        command: session_worker::sessions::cli::SessionsCommand,
    },
    /// Print a valid Stripe-Signature header value for the payload in FILE
    /// (no database needed).
    Sign(cli::sign::Args),
    /// Check the deployment: database, schema, indexes, migrations, rights,
    /// time zones, settings and Stripe's API; one line per check, exit 1 if
    /// any fails.
    Doctor,
    /// Print recorded events, newest first: received, id, type, outcome, user.
    Events(cli::events::Args),
    /// Fetch events from Stripe's API (needs STRIPE_SECRET_KEY) and apply them
    /// again through the webhook's path, under its ordering rules.
    Replay(cli::replay::Args),
    /// Build a realistic Stripe event, sign it with --secret as Stripe does,
    /// POST it to --url and print the answer (no database needed).
    Trigger(cli::trigger::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    match cli.command {
        Command::Serve => cli::serve::run(&env),
        Command::Migrate => cli::migrate::run(&env),
        Command::Reconcile(args) => cli::reconcile::run(&env, args),
        Command::Purge(args) => cli::purge::run(&env, args),
        Command::Sessions { command } => cli::sessions::run(&env, command),
        Command::Sign(args) => cli::sign::run(args),
        Command::Doctor => cli::doctor::run(&env),
        Command::Events(args) => cli::events::run(&env, args),
        Command::Replay(args) => cli::replay::run(&env, args),
        Command::Trigger(args) => cli::trigger::run(args),
    }
}
