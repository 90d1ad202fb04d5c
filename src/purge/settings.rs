//! How a purge run goes: its settings, and which mode it picks.

use std::time::Duration;

use crate::config::PurgeConfig;
use crate::store::{Estimate, RowLocks};

/// How a run finds the due sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Deletes `expires_at` windows of a batch of rows each, found through
    /// the `expires_at` indexes: for the few rows of a regular round.
    #[default]
    Ordinary,
    /// Walks the table in `ctid` ranges, in page order: for a backlog, where
    /// windows would read about a page per due row (a window's rows are
    /// spread over the whole table, and so are the next window's).
    Backlog,
}

/// Which mode a run takes: from the planner's estimate, or as told (the
/// `purge` command's `--mode`, the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeChoice {
    #[default]
    Auto,
    Always(Mode),
}

/// A backlog: at least this many due rows per page of the table, and at
/// least [`BACKLOG_MIN_BATCHES`] batches of them, by the statistics of an
/// analyzed table (without them, windows, right whatever the count). Then
/// reading every page once, in order, costs less than reading about a page
/// per due row (BENCHMARKS.md, "The purge's two modes").
pub const BACKLOG_ROWS_PER_PAGE: f64 = 0.5;
pub const BACKLOG_MIN_BATCHES: f64 = 10.0;

impl ModeChoice {
    pub fn mode(self, estimate: Estimate, batch_size: u32) -> Mode {
        match self {
            // Before PostgreSQL 14 each range would scan the whole table.
            _ if !estimate.tid_range_scans => Mode::Ordinary,
            Self::Always(mode) => mode,
            Self::Auto => {
                let due = estimate.due_rows;
                if estimate.analyzed
                    && due >= BACKLOG_ROWS_PER_PAGE * estimate.pages as f64
                    && due >= BACKLOG_MIN_BATCHES * f64::from(batch_size)
                {
                    Mode::Backlog
                } else {
                    Mode::Ordinary
                }
            }
        }
    }
}

/// Everything a run needs to know.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// At most this many rows per statement (`PURGE_BATCH_SIZE`); fewer when
    /// a statement would take longer than `target_statement`.
    pub batch_size: u32,
    /// Recorded events received longer ago than this go (`EVENT_RETENTION`).
    pub event_retention: Duration,
    pub mode: ModeChoice,
    /// How the statements (batches and ranges) keep off rows that others
    /// hold.
    pub row_locks: RowLocks,
    /// A pause after each range of a backlog, as a multiple of the range's
    /// own time: the share of the server the purge leaves to the app.
    pub pause_ratio: f64,
    /// The time one statement should take; batches and ranges shrink or grow
    /// (up to `batch_size` rows) towards it.
    pub target_statement: Duration,
    /// The server's limit for one statement on the purge's connection.
    pub statement_timeout: Duration,
}

impl Settings {
    /// Chosen from the pacing curve in BENCHMARKS.md: over four runs of
    /// five, no pause lowered the updates' p99 during a backlog purge
    /// consistently (each range still competes with the updates while it
    /// runs; a pause lengthens the purge), and 0.25 cost a quarter more
    /// time. None, then; `--pause-ratio` is there for a server the app keeps
    /// busy.
    pub const DEFAULT_PAUSE_RATIO: f64 = 0.0;
    pub const DEFAULT_ROW_LOCKS: RowLocks = RowLocks::LockTimeout;
    pub const DEFAULT_TARGET_STATEMENT: Duration = Duration::from_millis(50);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults, with `batch_size`.
    pub fn new(batch_size: u32) -> Self {
        Self {
            batch_size,
            event_retention: PurgeConfig::DEFAULT_EVENT_RETENTION,
            mode: ModeChoice::Auto,
            row_locks: Self::DEFAULT_ROW_LOCKS,
            pause_ratio: Self::DEFAULT_PAUSE_RATIO,
            target_statement: Self::DEFAULT_TARGET_STATEMENT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    pub fn from_config(config: &PurgeConfig) -> Self {
        Self {
            event_retention: config.event_retention,
            ..Self::new(config.batch_size)
        }
    }
}

/// `--mode` of the `purge` command: `auto`, `ordinary` or `backlog`.
pub fn parse_mode(raw: &str) -> Result<ModeChoice, String> {
    match raw {
        "auto" => Ok(ModeChoice::Auto),
        "ordinary" => Ok(ModeChoice::Always(Mode::Ordinary)),
        "backlog" => Ok(ModeChoice::Always(Mode::Backlog)),
        _ => Err("expected auto, ordinary or backlog".into()),
    }
}

/// `--row-locks` of the `purge` command: `skip-locked` or `lock-timeout`.
pub fn parse_row_locks(raw: &str) -> Result<RowLocks, String> {
    match raw {
        "skip-locked" => Ok(RowLocks::SkipLocked),
        "lock-timeout" => Ok(RowLocks::LockTimeout),
        _ => Err("expected skip-locked or lock-timeout".into()),
    }
}

/// `--pause-ratio` of the `purge` command: 0 to 100.
pub fn parse_pause_ratio(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(ratio) if (0.0..=100.0).contains(&ratio) => Ok(ratio),
        _ => Err("expected a number from 0 to 100".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(due_rows: f64, pages: i64) -> Estimate {
        Estimate {
            due_rows,
            pages,
            analyzed: true,
            tid_range_scans: true,
        }
    }

    #[test]
    fn a_backlog_is_many_due_rows_for_the_tables_size() {
        let auto = ModeChoice::Auto;
        // 1,000,000 sessions on 30,000 pages.
        assert_eq!(auto.mode(estimate(500_000.0, 30_000), 5000), Mode::Backlog);
        assert_eq!(auto.mode(estimate(10_000.0, 30_000), 5000), Mode::Ordinary);
        // Due rows dense enough, but a few batches' worth: windows.
        assert_eq!(auto.mode(estimate(40.0, 10), 5000), Mode::Ordinary);
        assert_eq!(auto.mode(estimate(0.0, 0), 5000), Mode::Ordinary);
        assert_eq!(auto.mode(estimate(500.0, 10), 10), Mode::Backlog);
        // Never analyzed: no trust in the counts.
        let guess = Estimate {
            analyzed: false,
            ..estimate(500_000.0, 30_000)
        };
        assert_eq!(auto.mode(guess, 5000), Mode::Ordinary);
        // PostgreSQL 13 or older: no TID Range Scan, never ranges.
        let old = Estimate {
            tid_range_scans: false,
            ..estimate(500_000.0, 30_000)
        };
        assert_eq!(auto.mode(old, 5000), Mode::Ordinary);
        assert_eq!(
            ModeChoice::Always(Mode::Backlog).mode(old, 5000),
            Mode::Ordinary
        );
    }

    #[test]
    fn a_mode_as_told_is_kept() {
        for mode in [Mode::Ordinary, Mode::Backlog] {
            for due in [0.0, 1e9] {
                assert_eq!(ModeChoice::Always(mode).mode(estimate(due, 10), 10), mode);
            }
        }
    }
}
