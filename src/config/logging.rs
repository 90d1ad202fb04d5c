//! `LOG_FORMAT`: how log lines are written.

use super::{ConfigError, Env};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env
            .get("LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            Some(other) => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("must be json or text, got {other:?}"),
            )),
        }
    }
}
