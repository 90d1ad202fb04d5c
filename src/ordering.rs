//! Which of two states of one subscription stands.
//!
//! Stripe delivers out of order and `created` has one-second resolution, so
//! the state recorded for a subscription is only replaced by a state that is
//! not older, and ties follow Stripe's own life cycle: a subscription starts
//! `incomplete`, and `canceled` / `incomplete_expired` are final (a renewed
//! subscription gets a new id).

/// A status with the `created` time (unix seconds) of the event that said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped<'a> {
    pub status: &'a str,
    pub created: i64,
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// Whether `incoming` replaces `current` as the subscription's state.
pub fn supersedes(incoming: Stamped<'_>, current: Stamped<'_>) -> bool {
    if is_terminal(current.status) {
        // Final: nothing brings it back, and a repeat of the end changes nothing.
        return false;
    }
    // Nothing goes back to the first stage once it has left it.
    if incoming.status == "incomplete" && current.status != "incomplete" {
        return false;
    }
    match incoming.created.cmp(&current.created) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        // Same second: the end wins, otherwise the later delivery does.
        std::cmp::Ordering::Equal => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: &str, created: i64) -> Stamped<'_> {
        Stamped { status, created }
    }

    #[test]
    fn newer_wins_and_older_loses() {
        assert!(supersedes(at("past_due", 11), at("active", 10)));
        assert!(!supersedes(at("past_due", 9), at("active", 10)));
    }

    #[test]
    fn on_a_tie_the_later_delivery_wins() {
        assert!(supersedes(at("past_due", 10), at("active", 10)));
        assert!(supersedes(at("active", 10), at("past_due", 10)));
    }

    #[test]
    fn on_a_tie_a_terminal_status_wins_and_stays() {
        assert!(supersedes(at("canceled", 10), at("active", 10)));
        assert!(supersedes(
            at("incomplete_expired", 10),
            at("incomplete", 10)
        ));
        assert!(!supersedes(at("active", 10), at("canceled", 10)));
    }

    #[test]
    fn canceled_never_becomes_active_again() {
        assert!(!supersedes(at("active", 99), at("canceled", 10)));
        assert!(!supersedes(
            at("trialing", 99),
            at("incomplete_expired", 10)
        ));
    }

    #[test]
    fn incomplete_never_overwrites_a_later_stage() {
        assert!(!supersedes(at("incomplete", 10), at("active", 10)));
        assert!(!supersedes(at("incomplete", 11), at("trialing", 10)));
        assert!(supersedes(at("active", 10), at("incomplete", 10)));
        assert!(supersedes(at("incomplete", 11), at("incomplete", 10)));
    }
}
