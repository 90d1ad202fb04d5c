//! A bound on log lines about refused requests: anyone can send the public
//! endpoint bad requests, and a flood of them must not flood the log (or
//! spend the CPU writing it). Every refusal is still counted in `/metrics`;
//! the lines let through say how many were left out since the last one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines about refusals per second, all routes and causes together.
const LINES_PER_SECOND: u32 = 5;

pub static REFUSALS: Throttle = Throttle::new(LINES_PER_SECOND);

/// Lines about requests answered 503 (database or API away): webhooks and
/// the session API's calls. Stripe retries each pending event, and the app
/// each of its users' requests, so an outage brings a stream of them (the
/// soak logged 200 MB in five minutes before this).
pub static UNAVAILABLE: Throttle = Throttle::new(LINES_PER_SECOND);

pub struct Throttle {
    per_second: u32,
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    written: u32,
    /// Lines left out since the last one written.
    left_out: u64,
}

impl Throttle {
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new(Window {
                started: None,
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// `Some(lines left out before this one)` when this line may be written.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= Duration::from_secs(1));
        if expired {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written < self.per_second {
            window.written += 1;
            Some(std::mem::take(&mut window.left_out))
        } else {
            window.left_out += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_a_second_then_the_count_of_those_left_out() {
        let throttle = Throttle::new(2);
        let t0 = Instant::now();
        assert_eq!(throttle.admit_at(t0), Some(0));
        assert_eq!(throttle.admit_at(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.admit_at(t0 + Duration::from_millis(500)), None);
        }
        let next = t0 + Duration::from_secs(1);
        assert_eq!(throttle.admit_at(next), Some(1000));
        assert_eq!(throttle.admit_at(next), Some(0));
        assert_eq!(throttle.admit_at(next), None);
    }
}
