//! `session-worker sessions list|revoke|stats`: what an operator needs
//! without the HTTP API (and without its token). Ids are shown by their
//! first 8 characters only: enough to tell sessions apart, too few to use.

use std::io::Write;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::PgPool;

use crate::config::DatabaseConfig;
use crate::store::{self, SessionStore};

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// Print the user's active sessions, newest first:
    /// `<created> <expires> <first 8 characters of the id>…`.
    List {
        /// The username, exactly as the web app stores it.
        #[arg(long)]
        user: String,
    },
    /// End every active session of the user (but the one named), and print
    /// `ended <N> sessions`.
    Revoke {
        #[arg(long)]
        user: String,
        /// A session id to keep.
        #[arg(long, value_name = "SESSION_ID")]
        except: Option<String>,
    },
    /// Print the number of active sessions, of users with one, of users with
    /// more than one, and the median age of active sessions.
    Stats,
}

/// The subcommand as `main` runs it: one connection, output on stdout.
pub async fn run_command(command: SessionsCommand, database: DatabaseConfig) -> anyhow::Result<()> {
    let pool = store::pool(&database, 1)?;
    let mut out = std::io::stdout().lock();
    let result = run(command, pool.clone(), &mut out).await;
    pool.close().await;
    result
}

pub async fn run(
    command: SessionsCommand,
    pool: PgPool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let store = SessionStore::new(pool);
    match command {
        SessionsCommand::List { user } => {
            for session in store.list(&user).await? {
                let prefix: String = session.session_id.chars().take(8).collect();
                writeln!(
                    out,
                    "{} {} {prefix}…",
                    time(session.created_at),
                    time(Some(session.expires_at))
                )?;
            }
        }
        SessionsCommand::Revoke { user, except } => {
            let ended = store.revoke(&user, except.as_deref()).await?;
            writeln!(out, "ended {} sessions", ended.len())?;
        }
        SessionsCommand::Stats => {
            let stats = store.stats().await?;
            let median = stats.median_age_secs.map_or_else(
                || "-".to_owned(),
                |secs| {
                    humantime::format_duration(Duration::from_secs(secs.max(0.0).round() as u64))
                        .to_string()
                },
            );
            writeln!(out, "active sessions: {}", stats.active)?;
            writeln!(out, "users with an active session: {}", stats.users)?;
            writeln!(
                out,
                "users with more than one: {}",
                stats.users_with_several
            )?;
            writeln!(out, "median age of active sessions: {median}")?;
        }
    }
    Ok(())
}

/// RFC 3339 UTC to the second; `-` for a time the app left empty.
fn time(at: Option<NaiveDateTime>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
