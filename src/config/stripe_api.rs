//! `STRIPE_SECRET_KEY` and `STRIPE_API_BASE`: how to reach Stripe's API.

use secrecy::SecretString;

use super::{ConfigError, Env, StripeMode, urls};

/// Stripe's API: optional for `serve` (the truth behind invoice events and
/// ties), required by `reconcile`.
#[derive(Clone)]
pub struct StripeApiConfig {
    /// `STRIPE_SECRET_KEY`, `sk_...` or `rk_...`; `None` when unset, and then
    /// the worker makes no API call at all.
    pub secret_key: Option<SecretString>,
    /// `STRIPE_API_BASE`, always ending with `/` (the client appends `v1/...`).
    pub api_base: String,
}

impl std::fmt::Debug for StripeApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApiConfig")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[redacted]"),
            )
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl StripeApiConfig {
    pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // A key of the other mode than STRIPE_MODE is refused wherever a key is read.
        StripeMode::from_env(env)?;
        let secret_key = match env.get("STRIPE_SECRET_KEY") {
            None => None,
            Some(key) => Some(Self::secret_key(key)?),
        };
        let api_base = env.get("STRIPE_API_BASE").unwrap_or(Self::DEFAULT_API_BASE);
        Ok(Self {
            secret_key,
            api_base: Self::api_base(api_base)?,
        })
    }

    /// For commands that cannot work without the API (`reconcile`).
    pub fn require_key(&self, command: &str) -> Result<(), ConfigError> {
        match self.secret_key {
            Some(_) => Ok(()),
            None => Err(ConfigError::new(
                "STRIPE_SECRET_KEY",
                format!(
                    "is required by `{command}` (a secret key sk_... or a restricted key rk_... that reads events and subscriptions)"
                ),
            )),
        }
    }

    /// Says what is wrong with a key, never what it is.
    fn secret_key(key: &str) -> Result<SecretString, ConfigError> {
        let problem = if key.starts_with("pk_") {
            Some(
                "is a publishable key (pk_...), which cannot read events; use a secret key sk_... or a restricted key rk_...",
            )
        } else if key.starts_with("whsec_") {
            Some(
                "is a webhook signing secret (whsec_..., for STRIPE_WEBHOOK_SECRET); use a secret key sk_... or a restricted key rk_...",
            )
        } else if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            Some("must be a secret key sk_... or a restricted key rk_...")
        } else if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Some("holds characters that no Stripe key has (letters, digits and _ only)")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(ConfigError::new("STRIPE_SECRET_KEY", problem)),
            None => Ok(SecretString::from(key.to_owned())),
        }
    }

    /// An https URL with a host and at most a path: `https://api.stripe.com`,
    /// `https://proxy.internal/stripe/`; http only to a loopback address
    /// (`http://127.0.0.1:12111`).
    fn api_base(raw: &str) -> Result<String, ConfigError> {
        let invalid = |why: &str| {
            // A URL with user info may hold a password: not echoed.
            let got = if raw.contains('@') {
                String::new()
            } else {
                format!(", got {raw:?}")
            };
            ConfigError::new(
                "STRIPE_API_BASE",
                format!("must be an http:// or https:// URL ({why}){got}"),
            )
        };
        let (tls, rest) = match raw.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (
                false,
                raw.strip_prefix("http://")
                    .ok_or_else(|| invalid("no http:// or https://"))?,
            ),
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if host.contains('@') {
            return Err(invalid("credentials belong in STRIPE_SECRET_KEY"));
        }
        // The key travels in every request's header: in clear text only to
        // this machine (a local fake, a sidecar proxy).
        if !tls && !urls::is_loopback(host) {
            return Err(invalid("http:// only to a loopback address; use https://"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~/:[]%".contains(c);
        if !rest.chars().all(allowed) {
            return Err(invalid("no query, fragment or space allowed"));
        }
        Ok(format!("{}/", raw.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_api_is_optional_and_its_base_defaults_to_stripe() {
        let config = StripeApiConfig::from_env(&Env::from_pairs([])).unwrap();
        assert!(config.secret_key.is_none());
        assert_eq!(config.api_base, "https://api.stripe.com/");
        assert_eq!(
            config.require_key("reconcile").unwrap_err().variable,
            "STRIPE_SECRET_KEY"
        );

        let config = StripeApiConfig::from_env(&Env::from_pairs([
            ("STRIPE_SECRET_KEY", "rk_test_51abcDEF"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111"),
        ]))
        .unwrap();
        assert_eq!(
            config.secret_key.as_ref().map(|k| k.expose_secret()),
            Some("rk_test_51abcDEF")
        );
        assert_eq!(config.api_base, "http://127.0.0.1:12111/");
        assert!(!format!("{config:?}").contains("51abcDEF"));
    }

    #[test]
    fn api_settings_errors_name_the_variable_and_never_the_key() {
        for key in [
            "pk_live_topsecret",
            "whsec_topsecret",
            "topsecret",
            "sk_live_top secret",
            "sk_live_topsecret\u{e9}",
        ] {
            let error = StripeApiConfig::from_env(&Env::from_pairs([("STRIPE_SECRET_KEY", key)]))
                .unwrap_err();
            assert_eq!(error.variable, "STRIPE_SECRET_KEY", "{key:?}");
            assert!(!error.to_string().contains("topsecret"), "{error}");
        }
        for base in [
            "api.stripe.com",
            "ftp://api.stripe.com",
            "https://",
            "https:///v1",
            "http://localhost:12111/?x=1",
            "https://user:hunter2@api.stripe.com",
            "http://api.stripe.com",
            "http://10.0.0.7:8080/stripe",
            "http://127.evil.example",
        ] {
            let error = StripeApiConfig::from_env(&Env::from_pairs([("STRIPE_API_BASE", base)]))
                .unwrap_err();
            assert_eq!(error.variable, "STRIPE_API_BASE", "{base:?}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        for loopback in [
            "http://localhost:12111",
            "http://127.0.0.1:12111/",
            "http://[::1]:12111",
            "https://proxy.internal/stripe",
        ] {
            let env = Env::from_pairs([("STRIPE_API_BASE", loopback)]);
            assert!(StripeApiConfig::from_env(&env).is_ok(), "{loopback:?}");
        }
    }
}
