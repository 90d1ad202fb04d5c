//! An ordinary round: the due sessions in `expires_at` windows of a batch
//! each, the expired ones, then the deactivated ones (see
//! [`crate::store::DueSet`]). Each batch asks the index where its window
//! ends, then deletes the window's rows in one statement that reads their
//! pages in the table's order, as a single `DELETE` of them all would.
//!
//! A window is `[from, next)`, `next` the `expires_at` a batch's worth of
//! rows on: at most a batch of rows, whatever ties there are at its edges.
//! More rows than a batch sharing one `expires_at` are taken a batch at a
//! time with `LIMIT` (and `SKIP LOCKED`), until fewer are left.

use std::time::Instant;

use chrono::{NaiveDateTime, TimeDelta};

use super::walk::{Run, next_size};
use crate::store::{DueSet, RowLocks, clamp_bounds, is_statement_timeout};

/// An ordinary round's first statement, at most: a full batch of 5000
/// scattered rows took 100 to 210 ms on a loaded benchmark machine (a heap
/// page read per row), over the 100 ms a statement may take; 2000 took 25
/// ms on a quiet one. The next statements grow from what this one
/// measured, towards the target time.
pub const FIRST_BATCH_ROWS: u32 = 2000;

/// How many times in a row one window is done again because it deleted
/// fewer rows than it locked (a row moved under it). Past it the walk goes
/// on and leaves the rest to the next round: something that keeps rows
/// from going (an app's `BEFORE DELETE` trigger that returns NULL, a rule,
/// a row updated without a pause) must not hold the purge's lock for ever.
const REDOS_AT_MOST: u32 = 3;

/// What a walk does next, from the edge of its next window.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing of the set is left from where the walk is.
    Done,
    /// The rows of `[from, to]` (inclusive; `None`: unbounded), then on from
    /// `then` (`None`: the set is done).
    Window {
        from: Option<NaiveDateTime>,
        to: Option<NaiveDateTime>,
        then: Option<NaiveDateTime>,
    },
    /// More than a batch of rows share this `expires_at`: a batch of them.
    Tie(NaiveDateTime),
}

/// The next step of a walk at `from`, given the first due `expires_at` from
/// there and the one a batch further.
fn step(
    from: Option<NaiveDateTime>,
    first: Option<NaiveDateTime>,
    next: Option<NaiveDateTime>,
) -> Step {
    match (first, next) {
        (None, _) => Step::Done,
        // Only a clamped edge comes back below where the walk is: the rows
        // past the highest bound, which went with the tie at it. Whatever
        // else, a walk that would not move on ends here.
        (Some(first), _) if from.is_some_and(|from| first < from) => Step::Done,
        // Fewer than a batch are left: all of them, the set's last window.
        (Some(_), None) => Step::Window {
            from,
            to: None,
            then: None,
        },
        (Some(first), Some(next)) if next == first => Step::Tie(first),
        // `expires_at` has microseconds: `< next` is `<= next - 1 µs`.
        (Some(_), Some(next)) => Step::Window {
            from,
            to: Some(next - TimeDelta::microseconds(1)),
            then: Some(next),
        },
    }
}

/// A tie's window: its value; at a clamped bound ([`clamp_bounds`]: an
/// edge of `-infinity`, `infinity` or a year chrono cannot hold), every row
/// beyond it as well, which the bound stands for.
fn tie_window(at: NaiveDateTime) -> (Option<NaiveDateTime>, Option<NaiveDateTime>) {
    let (lowest, highest) = clamp_bounds();
    if at <= lowest {
        (None, Some(at))
    } else if at >= highest {
        (Some(at), None)
    } else {
        (Some(at), Some(at))
    }
}

impl Run<'_> {
    pub(super) async fn window_walk(&mut self, cutoff: NaiveDateTime) -> Result<(), sqlx::Error> {
        let row_locks = self.settings.row_locks;
        self.conn.prepare_windows(row_locks).await?;
        let mut rows = self.settings.batch_size.min(FIRST_BATCH_ROWS);
        for set in [DueSet::Expired, DueSet::Deactivated] {
            rows = self.walk_set(set, cutoff, rows).await?;
        }
        Ok(())
    }

    /// One set's windows; answers the batch size reached, for the next set.
    async fn walk_set(
        &mut self,
        set: DueSet,
        cutoff: NaiveDateTime,
        mut rows: u32,
    ) -> Result<u32, sqlx::Error> {
        let row_locks = self.settings.row_locks;
        let mut from = None;
        let mut redone = 0;
        while !self.stopping() {
            let started = Instant::now();
            let result = async {
                let edge = self.conn.window_edge(set, from, cutoff, rows).await?;
                let step = step(from, edge.first, edge.next);
                let batch = match step {
                    Step::Done => None,
                    Step::Window { from, to, .. } => {
                        let window = (from, to);
                        Some(
                            self.conn
                                .delete_window(set, window, cutoff, rows, row_locks)
                                .await?,
                        )
                    }
                    // Only `LIMIT` splits a tie; it needs the row locks first.
                    Step::Tie(at) => {
                        let window = tie_window(at);
                        let locks = RowLocks::SkipLocked;
                        Some(
                            self.conn
                                .delete_window(set, window, cutoff, rows, locks)
                                .await?,
                        )
                    }
                };
                Ok::<_, sqlx::Error>((step, batch))
            }
            .await;
            let (step, batch) = match result {
                Err(error) if is_statement_timeout(&error) && rows > 1 => {
                    rows /= 2;
                    tracing::warn!(rows, "a purge batch hit the statement timeout: halved");
                    continue;
                }
                result => result?,
            };
            let Some(batch) = batch else {
                return Ok(rows);
            };
            let elapsed = started.elapsed();
            self.count_sessions(batch.deleted, elapsed);
            // A row locked but not deleted moved under the statement: the
            // same window again takes it. A tie that filled its batch may
            // hold more.
            let short = batch.deleted < batch.found;
            let given_up = short && redone >= REDOS_AT_MOST;
            if given_up {
                tracing::debug!("rows of a window keep staying: left for the next round");
            }
            let moved = short && !given_up;
            redone = if moved { redone + 1 } else { 0 };
            match step {
                Step::Window { then, .. } if !moved => match then {
                    Some(then) => from = Some(then),
                    None => return Ok(rows),
                },
                Step::Tie(at) if !moved && (batch.found < u64::from(rows) || given_up) => {
                    // Nothing lies past the highest bound: the set is done
                    // (from just past it, its rows would come back clamped
                    // to it, the same tie for ever).
                    if at >= clamp_bounds().1 {
                        return Ok(rows);
                    }
                    from = Some(at + TimeDelta::microseconds(1));
                }
                _ => {}
            }
            let next = next_size(f64::from(rows), elapsed, self.settings, batch.found);
            rows = next.min(f64::from(self.settings.batch_size)) as u32;
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_ends_before_the_value_a_batch_further() {
        let t = |s: &str| -> NaiveDateTime { s.parse().unwrap() };
        let (a, b) = (t("2030-01-01T00:00:00"), t("2030-01-01T00:00:01"));
        assert_eq!(step(Some(a), None, None), Step::Done);
        assert_eq!(
            step(None, Some(a), None),
            Step::Window {
                from: None,
                to: None,
                then: None
            }
        );
        assert_eq!(
            step(Some(a), Some(a), Some(b)),
            Step::Window {
                from: Some(a),
                to: Some(t("2030-01-01T00:00:00.999999")),
                then: Some(b)
            }
        );
        // A batch and one more share `a`: a window before it would be empty.
        assert_eq!(step(None, Some(a), Some(a)), Step::Tie(a));
        // An edge below where the walk is (a clamped one): nothing to move to.
        assert_eq!(step(Some(b), Some(a), Some(a)), Step::Done);
    }

    #[test]
    fn a_tie_at_a_clamped_bound_takes_every_row_beyond_it() {
        let (lowest, highest) = clamp_bounds();
        assert_eq!(tie_window(lowest), (None, Some(lowest)));
        assert_eq!(tie_window(highest), (Some(highest), None));
        let t: NaiveDateTime = "2030-01-01T00:00:00".parse().unwrap();
        assert_eq!(tie_window(t), (Some(t), Some(t)));
    }
}
