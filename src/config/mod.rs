//! Settings, read once from the environment at start.
//!
//! Every error names the variable at fault, and no error or `Debug` output
//! ever contains a secret's value.

use std::collections::HashMap;

mod urls;

mod database;
mod endpoint;
mod http;
mod logging;
mod purge;
mod schedule;
pub mod sessions;
mod stripe_api;
mod webhook;

pub use database::DatabaseConfig;
pub use endpoint::{MetricsToken, StripeMode};
pub use http::HttpConfig;
pub use logging::LogFormat;
pub use purge::PurgeConfig;
pub use schedule::{CronSchedule, reconcile_schedule};
pub use stripe_api::StripeApiConfig;
pub use webhook::{RulesConfig, WebhookConfig};

/// A setting that is missing or cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// Where the settings come from; tests pass a map instead of the process
/// environment.
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// A set, non-blank value, for the checks of `doctor`, which reports a
    /// bad setting instead of stopping on it.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name)
    }

    /// A set, non-blank value.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, "is required but not set"))
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| ConfigError::new(name, format!("must be {expected}, got {raw:?}"))),
        }
    }
}
