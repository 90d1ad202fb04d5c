//! Settings of the public endpoint: which Stripe mode it accepts
//! (`STRIPE_MODE`) and who may read `/metrics` (`METRICS_TOKEN`).

use secrecy::SecretString;

use super::{ConfigError, Env};

/// `STRIPE_MODE`: whose events change anything. One URL may be registered
/// both as a test-mode and as a live-mode endpoint; in production a test-mode
/// event must not grant access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StripeMode {
    /// Both modes apply (the default).
    #[default]
    Any,
    Live,
    Test,
}

impl StripeMode {
    /// Reads `STRIPE_MODE`, and refuses it when `STRIPE_SECRET_KEY` is a key
    /// of the other mode (the key's mode is what `reconcile` and `replay`
    /// would read events from).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env
            .get("STRIPE_MODE")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("any") => Self::Any,
            Some("live") => Self::Live,
            Some("test") => Self::Test,
            Some(other) => {
                return Err(ConfigError::new(
                    "STRIPE_MODE",
                    format!("must be any, live or test, got {other:?}"),
                ));
            }
        };
        if let Some(key_mode) = env.get("STRIPE_SECRET_KEY").and_then(Self::of_key)
            && !mode.admits(Some(key_mode == Self::Live))
        {
            // The key itself is never echoed: only the mode it is of.
            let key_mode = if key_mode == Self::Live {
                "live"
            } else {
                "test"
            };
            return Err(ConfigError::new(
                "STRIPE_MODE",
                format!(
                    "is {} but STRIPE_SECRET_KEY is a {key_mode}-mode key; use a key of the same mode",
                    mode.as_str()
                ),
            ));
        }
        Ok(mode)
    }

    /// The mode of a Stripe API key (`sk_live_...`, `rk_test_...`), when its
    /// prefix says.
    pub fn of_key(key: &str) -> Option<Self> {
        let rest = key
            .strip_prefix("sk_")
            .or_else(|| key.strip_prefix("rk_"))?;
        if rest.starts_with("live_") {
            Some(Self::Live)
        } else if rest.starts_with("test_") {
            Some(Self::Test)
        } else {
            None
        }
    }

    /// Whether an event with this `livemode` may change anything. An event
    /// that does not say its mode is of neither.
    pub fn admits(self, livemode: Option<bool>) -> bool {
        match self {
            Self::Any => true,
            Self::Live => livemode == Some(true),
            Self::Test => livemode == Some(false),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// `METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer
/// <token>`. `SecretString` keeps it out of `Debug`.
#[derive(Clone, Debug)]
pub struct MetricsToken(pub SecretString);

impl MetricsToken {
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(token) = env.get("METRICS_TOKEN") else {
            return Ok(None);
        };
        // What a Bearer header can carry (RFC 6750's token68, plus what
        // generators commonly use); says what is wrong, not what it is.
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
        if !token.bytes().all(allowed) {
            return Err(ConfigError::new(
                "METRICS_TOKEN",
                "may hold only letters, digits and - . _ ~ + / =",
            ));
        }
        Ok(Some(Self(SecretString::from(token.to_owned()))))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn mode_defaults_to_any_and_reads_its_values() {
        assert_eq!(
            StripeMode::from_env(&Env::from_pairs([])).unwrap(),
            StripeMode::Any
        );
        for (raw, mode) in [
            ("live", StripeMode::Live),
            ("TEST", StripeMode::Test),
            ("any", StripeMode::Any),
        ] {
            let env = Env::from_pairs([("STRIPE_MODE", raw)]);
            assert_eq!(StripeMode::from_env(&env).unwrap(), mode);
        }
        let error = StripeMode::from_env(&Env::from_pairs([("STRIPE_MODE", "prod")])).unwrap_err();
        assert_eq!(error.variable, "STRIPE_MODE");
    }

    #[test]
    fn a_key_of_the_other_mode_is_an_invalid_mode() {
        for (mode, key) in [
            ("live", "sk_test_secret123"),
            ("live", "rk_test_secret123"),
            ("test", "sk_live_secret123"),
            ("test", "rk_live_secret123"),
        ] {
            let env = Env::from_pairs([("STRIPE_MODE", mode), ("STRIPE_SECRET_KEY", key)]);
            let error = StripeMode::from_env(&env).unwrap_err();
            assert_eq!(error.variable, "STRIPE_MODE", "{mode} {key}");
            assert!(!error.to_string().contains("secret123"), "{error}");
        }
        for (mode, key) in [
            ("live", "sk_live_a"),
            ("test", "rk_test_a"),
            ("any", "sk_live_a"),
        ] {
            let env = Env::from_pairs([("STRIPE_MODE", mode), ("STRIPE_SECRET_KEY", key)]);
            assert!(StripeMode::from_env(&env).is_ok(), "{mode} {key}");
        }
    }

    #[test]
    fn a_keys_mode_is_read_from_its_prefix() {
        assert_eq!(StripeMode::of_key("rk_live_abc"), Some(StripeMode::Live));
        assert_eq!(StripeMode::of_key("sk_test_abc"), Some(StripeMode::Test));
        assert_eq!(StripeMode::of_key("sk_abc"), None);
        assert_eq!(StripeMode::of_key("pk_live_abc"), None);
    }

    #[test]
    fn events_of_the_other_mode_or_of_none_are_not_admitted() {
        assert!(StripeMode::Any.admits(None));
        assert!(StripeMode::Live.admits(Some(true)));
        assert!(!StripeMode::Live.admits(Some(false)));
        assert!(!StripeMode::Live.admits(None));
        assert!(StripeMode::Test.admits(Some(false)));
        assert!(!StripeMode::Test.admits(Some(true)));
    }

    #[test]
    fn the_metrics_token_is_optional_and_never_shown() {
        assert!(
            MetricsToken::from_env(&Env::from_pairs([]))
                .unwrap()
                .is_none()
        );
        let token = MetricsToken::from_env(&Env::from_pairs([("METRICS_TOKEN", "s3cr3t-token")]))
            .unwrap()
            .unwrap();
        assert_eq!(token.0.expose_secret(), "s3cr3t-token");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        let error =
            MetricsToken::from_env(&Env::from_pairs([("METRICS_TOKEN", "has space")])).unwrap_err();
        assert_eq!(error.variable, "METRICS_TOKEN");
        assert!(!error.to_string().contains("has space"));
    }
}
