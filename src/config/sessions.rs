//! The session API's settings: SESSION_API_TOKEN, SESSION_TTL,
//! SESSION_TOUCH_INTERVAL, SESSION_COOKIE_NAME.

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Env};

/// The bounds of a session's lifetime, for SESSION_TTL and `ttl_secs`.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// A token shorter than this is guessable; the app and the worker share it
/// through Render's environment, so length costs nothing.
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Clone)]
pub struct SessionApiConfig {
    /// Empty when SESSION_API_TOKEN is unset: the API is off.
    pub tokens: Vec<SecretString>,
    pub ttl: Duration,
    /// `None`: sliding expiry off, a GET never writes.
    pub touch_interval: Option<Duration>,
    pub cookie_name: String,
}

impl std::fmt::Debug for SessionApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionApiConfig")
            .field("tokens", &self.tokens.len())
            .field("ttl", &self.ttl)
            .field("touch_interval", &self.touch_interval)
            .field("cookie_name", &self.cookie_name)
            .finish()
    }
}

impl SessionApiConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ttl = match env.get("SESSION_TTL") {
            None => Duration::from_secs(24 * 3600),
            Some(raw) => lifetime("SESSION_TTL", raw)?,
        };
        let touch_interval = match env.get("SESSION_TOUCH_INTERVAL") {
            None => None,
            Some(raw) if raw.eq_ignore_ascii_case("off") => None,
            Some(raw) => {
                let interval = duration("SESSION_TOUCH_INTERVAL", raw)?;
                if interval.is_zero() || interval >= ttl {
                    return Err(ConfigError::new(
                        "SESSION_TOUCH_INTERVAL",
                        format!("must be longer than 0 and shorter than SESSION_TTL, got {raw:?}"),
                    ));
                }
                Some(interval)
            }
        };
        let cookie_name = env.get("SESSION_COOKIE_NAME").unwrap_or("session_id");
        if !cookie_name.bytes().all(is_cookie_name_byte) {
            return Err(ConfigError::new(
                "SESSION_COOKIE_NAME",
                format!(
                    "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {cookie_name:?}"
                ),
            ));
        }
        Ok(Self {
            tokens: tokens(env)?,
            ttl,
            touch_interval,
            cookie_name: cookie_name.to_owned(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// Comma-separated during a rotation; never echoed in an error.
fn tokens(env: &Env) -> Result<Vec<SecretString>, ConfigError> {
    let Some(raw) = env.get("SESSION_API_TOKEN") else {
        return Ok(Vec::new());
    };
    let tokens: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(ConfigError::new("SESSION_API_TOKEN", "holds no token"));
    }
    if tokens.iter().any(|t| t.chars().count() < MIN_TOKEN_CHARS) {
        return Err(ConfigError::new(
            "SESSION_API_TOKEN",
            format!("every token must be at least {MIN_TOKEN_CHARS} characters"),
        ));
    }
    if !tokens
        .iter()
        .all(|t| t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ConfigError::new(
            "SESSION_API_TOKEN",
            "tokens are sent in an Authorization header: visible ASCII only",
        ));
    }
    Ok(tokens
        .into_iter()
        .map(|t| SecretString::from(t.to_owned()))
        .collect())
}

fn duration(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(raw).map_err(|_| {
        ConfigError::new(
            variable,
            format!("must be a duration like 90m, 12h or 7d, got {raw:?}"),
        )
    })
}

fn lifetime(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let ttl = duration(variable, raw)?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ConfigError::new(
            variable,
            format!("must be from 1 minute to 400 days, got {raw:?}"),
        ));
    }
    Ok(ttl)
}

/// RFC 6265's `token`: visible ASCII but separators.
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = SessionApiConfig::from_env(&Env::from_pairs([])).unwrap();
        assert!(!config.enabled());
        assert_eq!(config.ttl, Duration::from_secs(86_400));
        assert_eq!(config.touch_interval, None);
        assert_eq!(config.cookie_name, "session_id");
    }

    #[test]
    fn settings_are_read() {
        let config = SessionApiConfig::from_env(&Env::from_pairs([
            (
                "SESSION_API_TOKEN",
                "old-token-0123456789, new-token-0123456789",
            ),
            ("SESSION_TTL", "7d"),
            ("SESSION_TOUCH_INTERVAL", "15m"),
            ("SESSION_COOKIE_NAME", "sid"),
        ]))
        .unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert_eq!(config.ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(config.touch_interval, Some(Duration::from_secs(900)));
        assert_eq!(config.cookie_name, "sid");
        assert!(!format!("{config:?}").contains("0123456789"));
    }

    #[test]
    fn errors_name_the_variable_and_never_the_token() {
        let cases = [
            ("SESSION_API_TOKEN", "short-secret"),
            ("SESSION_API_TOKEN", " , "),
            ("SESSION_API_TOKEN", "a-long-enough-secret\u{e9}"),
            ("SESSION_TTL", "30s"),
            ("SESSION_TTL", "401d"),
            ("SESSION_TTL", "a day"),
            ("SESSION_TOUCH_INTERVAL", "24h"),
            ("SESSION_TOUCH_INTERVAL", "0s"),
            ("SESSION_TOUCH_INTERVAL", "soon"),
            ("SESSION_COOKIE_NAME", "my session"),
            ("SESSION_COOKIE_NAME", "a=b"),
        ];
        for (variable, value) in cases {
            let error =
                SessionApiConfig::from_env(&Env::from_pairs([(variable, value)])).expect_err(value);
            assert_eq!(error.variable, variable, "{value:?}");
            if variable == "SESSION_API_TOKEN" {
                assert!(!error.to_string().contains("secret"), "{error}");
            }
        }
    }
}
