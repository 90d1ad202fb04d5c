//! The purge of expired and deactivated sessions: one run ([`run_once`]),
//! used by `session-worker purge` and by the [`Schedule`] inside `serve`.
//!
//! A run removes what had expired when it began, in batches that are each a
//! short transaction of their own, while holding a lock that makes the other
//! instances skip their round. It picks its mode from the planner's estimate
//! ([`settings`]), walks the sessions ([`walk`]), then deletes the recorded
//! events past `EVENT_RETENTION` the same way. It stops between batches on
//! shutdown. docs/purge.md tells the whole story.

mod pacer;
mod settings;
mod walk;
mod window_walk;

use std::time::{Duration, Instant, SystemTime};

use sqlx::PgPool;
use tokio_cron_scheduler::JobSchedulerError;
use tokio_util::sync::CancellationToken;

pub use self::settings::{
    BACKLOG_MIN_BATCHES, BACKLOG_ROWS_PER_PAGE, Mode, ModeChoice, Settings, parse_mode,
    parse_pause_ratio, parse_row_locks,
};
pub use self::window_walk::FIRST_BATCH_ROWS;
use crate::config::PurgeConfig;
use crate::schedule::Schedule;
use crate::store::PurgeConnection;

const SESSIONS_PURGED: &str = "session_worker_sessions_purged_total";
const EVENTS_PURGED: &str = "session_worker_events_purged_total";
const RUNS: &str = "session_worker_purge_runs_total";
const LAST_SUCCESS: &str = "session_worker_last_purge_success_timestamp_seconds";

/// What a run that held the lock did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Sessions deleted.
    pub purged: u64,
    /// DELETE statements run on the sessions.
    pub batches: u32,
    /// The mode it took.
    pub mode: Mode,
    /// Recorded events deleted (older than `EVENT_RETENTION`).
    pub events_purged: u64,
    /// Stopped between batches on shutdown, before the end.
    pub stopped: bool,
    /// The longest of the sessions' statements, client side.
    pub longest_statement: Duration,
    pub elapsed: Duration,
}

/// How a run ended, when no database error ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed(Report),
    /// Another instance (or an overlapping round) was purging: nothing done.
    Skipped,
}

/// One purge, now: logs its result and records its metrics.
///
/// Counted as `completed` also when shutdown stopped it between batches;
/// the last-success time is set only by a run that went to the end.
#[tracing::instrument(name = "purge", skip_all)]
pub async fn run_once(
    pool: &PgPool,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Outcome, sqlx::Error> {
    let started = Instant::now();
    let mut report = Report::default();
    let result = purge(pool, settings, shutdown, &mut report).await;
    report.elapsed = started.elapsed();
    let duration_ms = report.elapsed.as_millis() as u64;
    match &result {
        Ok(true) => {
            let (purged, batches, events_purged) =
                (report.purged, report.batches, report.events_purged);
            let mode = format!("{:?}", report.mode).to_lowercase();
            let longest_statement_ms = report.longest_statement.as_millis() as u64;
            metrics::counter!(EVENTS_PURGED).increment(events_purged);
            if report.stopped {
                tracing::info!(
                    purged,
                    batches,
                    events_purged,
                    mode,
                    duration_ms,
                    "purge stopped by shutdown"
                );
            } else {
                tracing::info!(
                    purged,
                    batches,
                    events_purged,
                    mode,
                    longest_statement_ms,
                    duration_ms,
                    "purge completed"
                );
                metrics::gauge!(LAST_SUCCESS).set(unix_now());
            }
            count_run("completed");
        }
        Ok(false) => {
            tracing::info!("purge skipped: another instance is purging");
            count_run("skipped");
        }
        Err(error) => {
            tracing::error!(
                %error,
                purged = report.purged,
                batches = report.batches,
                duration_ms,
                "purge failed; the next round tries again"
            );
            count_run("failed");
        }
    }
    result.map(|ran| {
        if ran {
            Outcome::Completed(report)
        } else {
            Outcome::Skipped
        }
    })
}

/// Runs the batches into `report`; false when another instance holds the
/// lock.
async fn purge(
    pool: &PgPool,
    settings: &Settings,
    shutdown: &CancellationToken,
    report: &mut Report,
) -> Result<bool, sqlx::Error> {
    let Some(mut conn) = PurgeConnection::try_lock(pool, settings.statement_timeout).await? else {
        return Ok(false);
    };
    // Fixed for the run: what expires meanwhile goes next round, so a run
    // always ends.
    let (cutoff, estimate) = conn.clock_and_estimate().await?;
    report.mode = settings.mode.mode(estimate, settings.batch_size);
    tracing::debug!(
        due_rows = estimate.due_rows,
        pages = estimate.pages,
        mode = ?report.mode,
        "purge estimate"
    );
    let mut run = walk::Run {
        conn: &mut conn,
        settings,
        shutdown,
        report,
    };
    let mode = run.report.mode;
    run.sessions(mode, cutoff, estimate).await?;
    run.events(cutoff).await?;
    if let Err(error) = conn.unlock().await {
        // Its connection is closed instead, which releases the lock as well.
        tracing::warn!(%error, "purge lock released by closing its connection");
    }
    Ok(true)
}

fn count_run(outcome: &'static str) {
    metrics::counter!(RUNS, "outcome" => outcome).increment(1);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The purge on its cron schedule inside `serve`, or `None` when
/// `PURGE_SCHEDULE` is `off`. A round in progress stops between batches once
/// `shutdown` is cancelled; [`Schedule::stop`] awaits it.
pub async fn schedule(
    pool: PgPool,
    config: &PurgeConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Schedule>, JobSchedulerError> {
    let Some(cron) = &config.schedule else {
        tracing::info!("purge schedule off");
        return Ok(None);
    };
    let settings = Settings::from_config(config);
    let schedule = Schedule::start("purge", cron, shutdown, move |stop| {
        let pool = pool.clone();
        // Errors are logged and counted by run_once; the next round runs.
        async move {
            let _ = run_once(&pool, &settings, &stop).await;
        }
    })
    .await?;
    Ok(Some(schedule))
}
