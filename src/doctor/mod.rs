//! `session-worker doctor`: is this deployment sound? Each check is one line,
//! `ok` or `FAIL` with what to do. Settings are checked here rather than
//! refused at start (as the other commands do), so that one run lists every
//! problem.

mod database;
mod settings;

use std::fmt;

use crate::config::Env;

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    /// What was checked, in a few words.
    pub subject: String,
    /// What was found; for a failure, what to do about it.
    pub detail: String,
}

impl Check {
    pub fn pass(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            subject: subject.into(),
            detail: detail.into(),
        }
    }

    pub fn fail(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    /// `ok   subject: detail` or `FAIL subject: detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.subject, self.detail)
    }
}

/// Every check, in the order an operator fixes things: settings first, then
/// the database, then Stripe's API. Never prints a secret.
pub async fn run(env: &Env) -> Vec<Check> {
    let mut checks = vec![settings::webhook_secret(env)];
    checks.extend(database::checks(env).await);
    checks.extend(settings::stripe_api(env).await);
    checks
}
