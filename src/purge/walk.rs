//! The batches of one run: the sessions in the run's mode, then the
//! recorded events past their retention. Each statement is its own short
//! transaction; the run stops between two on shutdown. A backlog's ranges
//! are paced (pauses between them: [`Settings::pause_ratio`],
//! [`super::pacer`]); an ordinary round is a few batches and runs them
//! straight.
//!
//! A statement that the server cuts off at its `statement_timeout` is tried
//! again at half its size, so that no `PURGE_BATCH_SIZE` fails every round;
//! and each next statement is sized from the last one's time, towards
//! [`Settings::target_statement`].

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use super::{Mode, Report, SESSIONS_PURGED, Settings};
use crate::store::{Estimate, PurgeConnection, is_statement_timeout};

/// A backlog's first range, at most: with few due rows a batch's worth
/// spans many pages, and 8400 pages took 92 ms on a quiet benchmark
/// machine (a forced backlog at 1% due); 2000 take about 20.
const FIRST_RANGE_PAGES: f64 = 2000.0;

/// What a walk shares with the run.
pub(super) struct Run<'a> {
    pub conn: &'a mut PurgeConnection,
    pub settings: &'a Settings,
    pub shutdown: &'a CancellationToken,
    pub report: &'a mut Report,
}

impl Run<'_> {
    /// The sessions due at `cutoff`, in `mode`.
    pub async fn sessions(
        &mut self,
        mode: Mode,
        cutoff: NaiveDateTime,
        estimate: Estimate,
    ) -> Result<(), sqlx::Error> {
        match mode {
            Mode::Ordinary => self.window_walk(cutoff).await,
            Mode::Backlog => self.range_walk(cutoff, estimate).await,
        }
    }

    async fn range_walk(
        &mut self,
        cutoff: NaiveDateTime,
        estimate: Estimate,
    ) -> Result<(), sqlx::Error> {
        let row_locks = self.settings.row_locks;
        self.conn.prepare_row_locks(row_locks).await?;
        let pages = estimate.pages;
        let mut range = first_range(estimate, self.settings.batch_size);
        let mut first = 0;
        let mut pacer = Pacer::new(self.settings.pause_ratio);
        while first < pages && !self.stopping() {
            let end = (first + range as i64).min(pages);
            let started = Instant::now();
            let deleted = match self.conn.delete_range(cutoff, first, end, row_locks).await {
                Err(error) if is_statement_timeout(&error) && end - first > 1 => {
                    range = ((end - first) / 2) as f64;
                    tracing::warn!(
                        pages = range,
                        "a purge range hit the statement timeout: halved"
                    );
                    continue;
                }
                result => result?,
            };
            let elapsed = started.elapsed();
            self.count_sessions(deleted, elapsed);
            first = end;
            range = next_size(range, elapsed, self.settings, deleted);
            // None after the last range.
            if first < pages
                && let Some(pause) = pacer.owe(elapsed)
            {
                let sleeping = Instant::now();
                self.pause(pause).await;
                pacer.paid(sleeping.elapsed());
            }
        }
        Ok(())
    }

    /// The recorded events received before `now` less the retention.
    pub async fn events(&mut self, now: NaiveDateTime) -> Result<(), sqlx::Error> {
        let retention = chrono::Duration::from_std(self.settings.event_retention)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = now.and_utc().checked_sub_signed(retention) else {
            return Ok(());
        };
        let batch_size = self.settings.batch_size;
        let mut from = None;
        let mut limit = batch_size;
        while !self.stopping() {
            let started = Instant::now();
            let batch = match self.conn.delete_events(before, &mut from, limit).await {
                Err(error) if is_statement_timeout(&error) && limit > 1 => {
                    limit /= 2;
                    continue;
                }
                result => result?,
            };
            let elapsed = started.elapsed();
            self.report.events_purged += batch.deleted;
            if batch.found < u64::from(limit) {
                return Ok(());
            }
            let next = next_size(f64::from(limit), elapsed, self.settings, batch.found);
            limit = next.min(f64::from(batch_size)) as u32;
        }
        Ok(())
    }

    /// True, and noted in the report, once shutdown has begun.
    pub(super) fn stopping(&mut self) -> bool {
        if self.shutdown.is_cancelled() {
            self.report.stopped = true;
        }
        self.report.stopped
    }

    pub(super) fn count_sessions(&mut self, deleted: u64, elapsed: Duration) {
        self.report.batches += 1;
        self.report.purged += deleted;
        self.report.longest_statement = self.report.longest_statement.max(elapsed);
        metrics::counter!(SESSIONS_PURGED).increment(deleted);
        tracing::debug!(
            batch = self.report.batches,
            purged = deleted,
            duration_us = elapsed.as_micros() as u64,
            "purge batch"
        );
    }

    /// Leaves the server to the app for `pause`; shutdown cuts it short.
    async fn pause(&self, pause: Duration) {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// A backlog's first range, in pages: a batch's worth of due rows at the
/// estimate's density, at most [`FIRST_RANGE_PAGES`]; the next ones follow
/// what each range found.
fn first_range(estimate: Estimate, batch_size: u32) -> f64 {
    let pages = estimate.pages.max(1) as f64;
    let density = estimate.due_rows / pages;
    (f64::from(batch_size) / density.max(1e-3))
        .min(FIRST_RANGE_PAGES)
        .clamp(1.0, pages)
}

/// The next statement's size (rows or pages), from the last one's: towards
/// the target time and at most a batch of rows, never more than twice the
/// last, never below 1.
pub(super) fn next_size(current: f64, elapsed: Duration, settings: &Settings, rows: u64) -> f64 {
    let by_time = settings.target_statement.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
    let by_rows = f64::from(settings.batch_size) / rows.max(1) as f64;
    (current * by_time.min(by_rows).min(2.0)).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_range_holds_a_batch_of_due_rows_within_a_cap() {
        let estimate = |due_rows, pages| Estimate {
            due_rows,
            pages,
            analyzed: true,
            tid_range_scans: true,
        };
        // Half of 1,000,000 sessions on 30,000 pages: 300 pages.
        assert_eq!(first_range(estimate(500_000.0, 30_000), 5000), 300.0);
        // 1% due: 15,000 pages for a batch, capped.
        assert_eq!(
            first_range(estimate(10_000.0, 30_000), 5000),
            FIRST_RANGE_PAGES
        );
        // Never past the table, never empty.
        assert_eq!(first_range(estimate(0.0, 10), 5000), 10.0);
        assert_eq!(first_range(estimate(1e9, 10), 5000), 1.0);
    }

    #[test]
    fn a_statement_grows_or_shrinks_towards_the_target() {
        let settings = Settings::new(5000); // target 50 ms
        let ms = Duration::from_millis;
        // Twice too slow: half the size.
        assert_eq!(next_size(1000.0, ms(100), &settings, 100), 500.0);
        // Fast and few rows: at most doubled.
        assert_eq!(next_size(1000.0, ms(1), &settings, 10), 2000.0);
        // Fast but a full batch of rows already: kept.
        assert_eq!(next_size(1000.0, ms(1), &settings, 5000), 1000.0);
        // Never below one.
        assert_eq!(next_size(1.0, ms(10_000), &settings, 1), 1.0);
    }
}
