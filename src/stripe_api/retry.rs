//! How hard to try one read of Stripe's API: attempts, pauses, budget.

use std::time::Duration;

/// Stripe counts its rate limits per second: a `429` is tried again no
/// sooner than this, and no sooner than its `Retry-After`.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// How hard to try one read.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// At most this many attempts.
    pub attempts: u32,
    /// One attempt's limit: connection, answer and body.
    pub attempt_timeout: Duration,
    /// The pause after the first failure; doubled after each next one, up
    /// to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts and pauses all end within this.
    pub budget: Duration,
}

impl Retry {
    /// A webhook is answered within 4.5 s: the API gets 3 s of it, the store
    /// the rest.
    pub const WEBHOOK: Self = Self {
        attempts: 4,
        attempt_timeout: Duration::from_millis(1200),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(800),
        budget: Duration::from_secs(3),
    };

    /// `reconcile` keeps no caller waiting: longer pauses ride out a rate
    /// limit (Stripe counts per second) or a short outage.
    pub const RECONCILE: Self = Self {
        attempts: 6,
        attempt_timeout: Duration::from_secs(20),
        first_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(8),
        budget: Duration::from_secs(60),
    };

    /// The pause after `failures` failed attempts (1 or more).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let retry = Retry::WEBHOOK;
        let pauses: Vec<u64> = (1..=5)
            .map(|n| retry.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 800]);
        assert_eq!(Retry::RECONCILE.backoff(40), Duration::from_secs(8));
    }

    #[test]
    fn the_webhook_retries_fit_its_deadline() {
        let retry = Retry::WEBHOOK;
        assert!(retry.budget + Duration::from_millis(1000) <= Duration::from_millis(4500));
    }
}
