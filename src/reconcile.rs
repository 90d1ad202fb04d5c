//! `session-worker reconcile`: the events Stripe could not deliver (an
//! outage longer than its retries, a wrong secret, a misconfigured endpoint),
//! read back from its Events API and applied through the webhook's own path.
//!
//! One run ([`run_once`]) lists the events of the types the worker handles
//! created since a point in time, newest first, page after page; skips those
//! recorded already; and applies each page's others, before the next page, with
//! [`Settler::apply`], the webhook's path: same exactly-once, same ordering
//! rules, same truth from the API for invoices and ties. A lock makes one
//! instance reconcile at a time.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::event::{self, Event, HANDLED_EVENTS};
use crate::settle::{SettleError, Settler};
use crate::stats;
use crate::store::{Outcome, ReconcileLock};
use crate::stripe_api::{EventsPage, Retry, StripeApiError};

/// `--since` when not given: Stripe's retry window in live mode.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Stripe keeps events for 30 days.
pub const MAX_SINCE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses `--since`: `72h`, `3d`, `90m`, `1d 12h`; at most 30 days.
pub fn parse_since(raw: &str) -> Result<Duration, String> {
    let since = humantime::parse_duration(raw.trim())
        .map_err(|error| format!("{raw:?} is not a duration like 72h, 3d or 90m ({error})"))?;
    if since.is_zero() {
        return Err("must be longer than 0".into());
    }
    if since > MAX_SINCE {
        return Err(format!(
            "{raw:?} is more than 30 days, as far back as Stripe keeps events"
        ));
    }
    Ok(since)
}

/// What a run did with the events it listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Events listed by the API.
    pub found: u64,
    pub applied: u64,
    /// Recorded before the run, or meanwhile by a webhook.
    pub already_seen: u64,
    /// Recorded, changing nothing: stale, unknown user, a case that needs
    /// nothing done; and events whose body we could not read (not recorded).
    pub ignored: u64,
    pub stale: u64,
    pub unknown_user: u64,
    /// Pages of events listed (one API call each, retries aside).
    pub pages: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reconcile: found {}, applied {}, already seen {}, ignored {} (stale {}, unknown user {})",
            self.found,
            self.applied,
            self.already_seen,
            self.ignored,
            self.stale,
            self.unknown_user
        )
    }
}

impl Report {
    fn count(&mut self, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Applied { .. } => {
                self.applied += 1;
                "applied"
            }
            Outcome::Duplicate => {
                self.already_seen += 1;
                "already_seen"
            }
            Outcome::Stale => {
                self.ignored += 1;
                self.stale += 1;
                "stale"
            }
            Outcome::UnknownUser => {
                self.ignored += 1;
                self.unknown_user += 1;
                "unknown_user"
            }
            Outcome::Ignored => {
                self.ignored += 1;
                "ignored"
            }
        };
        metrics::counter!(stats::RECONCILE_EVENTS, "outcome" => label).increment(1);
    }
}

/// How a run ended, when no error ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Completed(Report),
    /// Another instance was reconciling: nothing done.
    Skipped,
}

/// A run that stopped on an error; what it did until then stays done (each
/// event is its own transaction), and the next run picks up the rest.
#[derive(Debug, thiserror::Error)]
#[error("{cause} (so far: {so_far})")]
pub struct ReconcileError {
    pub so_far: Report,
    pub cause: ReconcileCause,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileCause {
    #[error("STRIPE_SECRET_KEY is not set")]
    NoKey,
    #[error("listing events: {0}")]
    Listing(StripeApiError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("applying {event_id}: {error}")]
    Applying {
        event_id: String,
        error: SettleError,
    },
}

/// One reconcile now, of the events created in the last `since`; logs its
/// result and records its metrics. Stops between events on `shutdown`.
#[tracing::instrument(name = "reconcile", skip_all, fields(since_s = since.as_secs()))]
pub async fn run_once(
    settler: &Settler,
    since: Duration,
    retry: &Retry,
    shutdown: &CancellationToken,
) -> Result<RunOutcome, ReconcileError> {
    let started = Instant::now();
    let mut report = Report::default();
    let result = locked_run(settler, since, retry, shutdown, &mut report).await;
    report.elapsed = started.elapsed();
    let label = match &result {
        Ok(true) => {
            tracing::info!(
                found = report.found,
                applied = report.applied,
                already_seen = report.already_seen,
                ignored = report.ignored,
                stale = report.stale,
                unknown_user = report.unknown_user,
                pages = report.pages,
                duration_ms = report.elapsed.as_millis() as u64,
                "reconcile completed"
            );
            "completed"
        }
        Ok(false) => {
            tracing::info!("reconcile skipped: another instance is reconciling");
            "skipped"
        }
        Err(cause) => {
            tracing::error!(%cause, "reconcile failed; {report}");
            "failed"
        }
    };
    metrics::counter!(stats::RECONCILE_RUNS, "outcome" => label).increment(1);
    match result {
        Ok(true) => Ok(RunOutcome::Completed(report)),
        Ok(false) => Ok(RunOutcome::Skipped),
        Err(cause) => Err(ReconcileError {
            so_far: report,
            cause,
        }),
    }
}

/// The run under the lock; false when another instance holds it.
///
/// Page after page, newest first: each page's missed events are applied
/// (oldest first within it) before the next page is asked for, so that a
/// run holds one page in memory, and a run that fails or stops half way
/// keeps what it applied. Across pages the older events come later; the
/// ordering rules sort that out (an older state never overwrites a newer
/// one, and a tie within a second is settled by the API, which `reconcile`
/// always has). Shutdown stops it while it waits for a page or an event,
/// not only between them.
async fn locked_run(
    settler: &Settler,
    since: Duration,
    retry: &Retry,
    shutdown: &CancellationToken,
    report: &mut Report,
) -> Result<bool, ReconcileCause> {
    let api = settler.api().ok_or(ReconcileCause::NoKey)?;
    let Some(lock) = ReconcileLock::try_lock(settler.store()).await? else {
        return Ok(false);
    };
    let since_unix = chrono::Utc::now().timestamp() - since.as_secs() as i64;
    let mut cursor: Option<String> = None;
    'pages: loop {
        let page = tokio::select! {
            biased;
            () = shutdown.cancelled() => break 'pages,
            page = api.events_page(HANDLED_EVENTS, since_unix, cursor.as_deref(), retry) => {
                page.map_err(ReconcileCause::Listing)?
            }
        };
        report.pages += 1;
        let (missed, last_id) = read_page(settler, &page, report).await?;
        for event in missed.iter().rev() {
            let applied = tokio::select! {
                biased;
                // Cut short, nothing of it is recorded unless its statement
                // committed: the next run applies it, or finds it seen.
                () = shutdown.cancelled() => break 'pages,
                applied = settler.apply(event, retry) => applied,
            };
            let outcome = applied.map_err(|error| ReconcileCause::Applying {
                event_id: event.id.clone(),
                error,
            })?;
            report.count(&outcome);
        }
        match last_id {
            Some(last) if page.has_more => cursor = Some(last),
            _ => break,
        }
    }
    if shutdown.is_cancelled() {
        tracing::info!("reconcile stopped by shutdown; the next run picks up the rest");
    }
    lock.unlock().await?;
    Ok(true)
}

#[derive(Deserialize)]
struct EventId {
    id: String,
}

/// The page's events not recorded yet, newest first, and the page's last
/// id (the next page's cursor). Those recorded are counted as already seen;
/// those we cannot read are counted as ignored and logged (the webhook would
/// have answered them 400).
async fn read_page(
    settler: &Settler,
    page: &EventsPage,
    report: &mut Report,
) -> Result<(Vec<Event>, Option<String>), ReconcileCause> {
    let ids = page
        .data
        .iter()
        .map(|raw| event_id(raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReconcileCause::Listing)?;
    let seen = settler.store().recorded_events(&ids).await?;
    let mut missed = Vec::new();
    for (raw, id) in page.data.iter().zip(&ids) {
        report.found += 1;
        if seen.contains(id) {
            report.already_seen += 1;
            metrics::counter!(stats::RECONCILE_EVENTS, "outcome" => "already_seen").increment(1);
            continue;
        }
        match event::parse(raw.get().as_bytes(), settler.username_key()) {
            Ok(event) => missed.push(event),
            Err(error) => {
                report.ignored += 1;
                metrics::counter!(stats::RECONCILE_EVENTS, "outcome" => "unreadable").increment(1);
                tracing::warn!(event_id = %id, "listed event not applied: {error}");
            }
        }
    }
    Ok((missed, ids.last().cloned()))
}

fn event_id(raw: &RawValue) -> Result<String, StripeApiError> {
    serde_json::from_str::<EventId>(raw.get())
        .map(|event| event.id)
        .map_err(|error| StripeApiError::BadAnswer(format!("listed event without an id: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_human_durations_up_to_30_days() {
        assert_eq!(parse_since("72h"), Ok(DEFAULT_SINCE));
        assert_eq!(parse_since("3d"), Ok(DEFAULT_SINCE));
        assert_eq!(parse_since("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_since("1d 12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_since("30d"), Ok(MAX_SINCE));
        for bad in ["31d", "721h", "0s", "3 days ago", "", "-3d", "3"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_report_is_one_line() {
        let report = Report {
            found: 12,
            applied: 7,
            already_seen: 3,
            ignored: 2,
            stale: 1,
            unknown_user: 1,
            ..Report::default()
        };
        assert_eq!(
            report.to_string(),
            "reconcile: found 12, applied 7, already seen 3, ignored 2 (stale 1, unknown user 1)"
        );
    }
}
