//! The pause between a backlog's ranges: `pause_ratio` times each range's
//! own time, owed range by range and taken once it adds up to
//! [`MIN_PAUSE`].
//!
//! A range of a few milliseconds owes a pause of one or two, and a timer
//! sleeps at least a millisecond, often two, past what it is asked: paused
//! after every range, a ratio of 0.25 cost 50% more time, not 25%
//! (BENCHMARKS.md). Gathered, and the time actually slept paid off, the
//! pause costs what the ratio says.

use std::time::Duration;

/// The shortest pause taken; less is owed to the next.
pub const MIN_PAUSE: Duration = Duration::from_millis(5);

/// The longest pause between two ranges, whatever the ratio.
const MAX_PAUSE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct Pacer {
    ratio: f64,
    /// Seconds of pause owed; below zero, slept in advance.
    owed: f64,
}

impl Pacer {
    pub fn new(ratio: f64) -> Self {
        Self { ratio, owed: 0.0 }
    }

    /// Adds what a statement of `elapsed` owes; the pause to take now, once
    /// the debt has reached [`MIN_PAUSE`].
    pub fn owe(&mut self, elapsed: Duration) -> Option<Duration> {
        let max = MAX_PAUSE.as_secs_f64();
        self.owed = (self.owed + elapsed.as_secs_f64() * self.ratio).min(max);
        (self.owed >= MIN_PAUSE.as_secs_f64()).then(|| Duration::from_secs_f64(self.owed))
    }

    /// Takes what was slept off the debt: a sleep longer than asked counts
    /// towards the next pause.
    pub fn paid(&mut self, slept: Duration) {
        self.owed -= slept.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A pause in whole milliseconds, rounded (the debt is kept in floats).
    fn ms(pause: Option<Duration>) -> Option<u64> {
        pause.map(|pause| (pause.as_secs_f64() * 1000.0).round() as u64)
    }

    #[test]
    fn short_pauses_are_gathered_until_they_add_up() {
        let mut pacer = Pacer::new(0.25);
        // Ranges of 4 ms owe 1 ms each: nothing until the fifth.
        for _ in 0..4 {
            assert_eq!(ms(pacer.owe(MS(4))), None);
        }
        assert_eq!(ms(pacer.owe(MS(4))), Some(5));
        // A sleep of 7 ms pays 2 ms of the next pauses in advance.
        pacer.paid(MS(7));
        assert_eq!(ms(pacer.owe(MS(4))), None);
        assert_eq!(ms(pacer.owe(MS(40))), Some(9));
    }

    #[test]
    fn a_long_range_pauses_at_once_and_no_pause_is_over_the_cap() {
        let mut pacer = Pacer::new(0.5);
        assert_eq!(ms(pacer.owe(MS(50))), Some(25));
        pacer.paid(MS(25));
        assert_eq!(ms(pacer.owe(MS(4))), None);
        assert_eq!(Pacer::new(1e9).owe(MS(50)), Some(MAX_PAUSE));
        assert_eq!(Pacer::new(0.0).owe(MS(50)), None);
    }
}
