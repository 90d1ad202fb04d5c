//! What a failed read means: the error callers see, and whether an attempt
//! is worth repeating.

use std::time::Duration;

use super::http::{HttpError, MAX_ANSWER_BYTES};
use super::retry::RATE_LIMIT_PAUSE;

/// Why a read gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Timeouts, refused connections, 429, 409 or 5xx until the attempts or
    /// the budget ran out: worth trying again later.
    #[error(
        "Stripe's API gave no usable answer after {attempts} attempt(s) in {elapsed_ms} ms; last: {last}"
    )]
    Unavailable {
        attempts: u32,
        elapsed_ms: u64,
        last: String,
    },
    /// 404: no such object for this key's account.
    #[error("{0} not found in Stripe's API")]
    NotFound(String),
    /// A refusal that trying again does not change (a wrong key, a key
    /// without a permission, a bad request) until someone changes a setting.
    #[error("Stripe's API refused the request: {0}")]
    Refused(String),
    /// A success whose body is not what the endpoint documents.
    #[error("Stripe's API answered something unreadable: {0}")]
    BadAnswer(String),
}

/// What a failed attempt means for the next one, with its metrics label.
pub(super) enum Failure {
    /// Worth another attempt, no sooner than the pause given.
    Transient(&'static str, String, Duration),
    Lasting(&'static str, StripeApiError),
}

impl Failure {
    pub(super) fn of(error: HttpError) -> Self {
        match error {
            HttpError::Status {
                status,
                kind,
                retry_after,
            } => {
                // Stripe's messages for 401/403 quote part of the key: only
                // the status, type and code are kept.
                let what = match &kind {
                    Some((kind, code)) => format!(
                        "{status} {kind}{}",
                        code.as_ref()
                            .map(|code| format!(" ({code})"))
                            .unwrap_or_default()
                    ),
                    None => {
                        format!("{status} (an answer that is not Stripe's: a proxy in between?)")
                    }
                };
                match status {
                    404 if kind.is_some() => {
                        Self::Lasting("not_found", StripeApiError::NotFound(what))
                    }
                    429 => Self::Transient(
                        "rate_limited",
                        what,
                        retry_after.unwrap_or_default().max(RATE_LIMIT_PAUSE),
                    ),
                    409 | 500..=599 => {
                        Self::Transient("server_error", what, retry_after.unwrap_or_default())
                    }
                    _ if kind.is_none() => Self::Transient("server_error", what, Duration::ZERO),
                    401 | 403 => Self::Lasting(
                        "refused",
                        StripeApiError::Refused(format!(
                            "{what}: check STRIPE_SECRET_KEY and its permissions (read events and subscriptions)"
                        )),
                    ),
                    _ => Self::Lasting("refused", StripeApiError::Refused(what)),
                }
            }
            HttpError::Timeout => Self::Transient("timeout", "timed out".into(), Duration::ZERO),
            HttpError::Unreachable(message) => {
                Self::Transient("unreachable", message, Duration::ZERO)
            }
            HttpError::TooLarge => Self::Lasting(
                "too_large",
                StripeApiError::BadAnswer(format!(
                    "an answer over {} MiB, refused",
                    MAX_ANSWER_BYTES / (1024 * 1024)
                )),
            ),
            HttpError::Invalid(message) => {
                Self::Lasting("refused", StripeApiError::Refused(message))
            }
        }
    }
}
