//! What the webhook needs: its secrets and tolerance, and the rules by which
//! an event is read (shared with `reconcile`).

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Env};

/// What the webhook needs to verify and interpret Stripe's calls.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Several during a rotation; `SecretString`'s `Debug` prints no value.
    pub secrets: Vec<SecretString>,
    pub tolerance: Duration,
    pub subscribed_statuses: Vec<String>,
    pub username_metadata_key: String,
}

impl WebhookConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets: Vec<SecretString> = env
            .required("STRIPE_WEBHOOK_SECRET")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        if secrets.is_empty() {
            return Err(ConfigError::new(
                "STRIPE_WEBHOOK_SECRET",
                "holds no secret (expected whsec_..., comma-separated during a rotation)",
            ));
        }
        let tolerance_secs: u64 =
            env.parsed("WEBHOOK_TOLERANCE_SECS", 300, "a whole number of seconds")?;
        if tolerance_secs == 0 {
            return Err(ConfigError::new(
                "WEBHOOK_TOLERANCE_SECS",
                "must be at least 1 second",
            ));
        }
        let rules = RulesConfig::from_env(env)?;
        Ok(Self {
            secrets,
            tolerance: Duration::from_secs(tolerance_secs),
            subscribed_statuses: rules.subscribed_statuses,
            username_metadata_key: rules.username_metadata_key,
        })
    }
}

/// How an event is read and what counts as subscribed: shared by the
/// webhook and `reconcile`, which applies events the same way.
#[derive(Clone, Debug)]
pub struct RulesConfig {
    pub subscribed_statuses: Vec<String>,
    pub username_metadata_key: String,
}

impl RulesConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            subscribed_statuses: Self::subscribed_statuses(env)?,
            username_metadata_key: env
                .get("USERNAME_METADATA_KEY")
                .unwrap_or("username")
                .to_owned(),
        })
    }

    fn subscribed_statuses(env: &Env) -> Result<Vec<String>, ConfigError> {
        const KNOWN: &[&str] = &[
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
        ];
        let raw = env.get("SUBSCRIBED_STATUSES").unwrap_or("active,trialing");
        let statuses: Vec<String> = raw
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if statuses.is_empty() {
            return Err(ConfigError::new("SUBSCRIBED_STATUSES", "names no status"));
        }
        if let Some(unknown) = statuses.iter().find(|s| !KNOWN.contains(&s.as_str())) {
            return Err(ConfigError::new(
                "SUBSCRIBED_STATUSES",
                format!(
                    "{unknown:?} is not a Stripe subscription status (known: {})",
                    KNOWN.join(", ")
                ),
            ));
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn webhook_defaults_follow_the_contract() {
        let env = Env::from_pairs([("STRIPE_WEBHOOK_SECRET", "whsec_a")]);
        let config = WebhookConfig::from_env(&env).unwrap();
        assert_eq!(config.tolerance, Duration::from_secs(300));
        assert_eq!(config.subscribed_statuses, ["active", "trialing"]);
        assert_eq!(config.username_metadata_key, "username");
    }

    #[test]
    fn several_secrets_are_split_on_commas() {
        let env = Env::from_pairs([("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new,")]);
        let config = WebhookConfig::from_env(&env).unwrap();
        let secrets: Vec<&str> = config.secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["whsec_old", "whsec_new"]);
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let env = Env::from_pairs([
            ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
            ("WEBHOOK_TOLERANCE_SECS", "soon"),
        ]);
        let error = WebhookConfig::from_env(&env).unwrap_err();
        assert_eq!(error.variable, "WEBHOOK_TOLERANCE_SECS");
        assert!(!error.to_string().contains("topsecret"));

        let config = WebhookConfig::from_env(&Env::from_pairs([(
            "STRIPE_WEBHOOK_SECRET",
            "whsec_topsecret",
        )]))
        .unwrap();
        assert!(!format!("{config:?}").contains("topsecret"));
    }

    #[test]
    fn missing_and_unknown_values_are_refused() {
        let missing = WebhookConfig::from_env(&Env::from_pairs([])).unwrap_err();
        assert_eq!(missing.variable, "STRIPE_WEBHOOK_SECRET");

        let env = Env::from_pairs([
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
            ("SUBSCRIBED_STATUSES", "active,paid"),
        ]);
        let unknown = WebhookConfig::from_env(&env).unwrap_err();
        assert_eq!(unknown.variable, "SUBSCRIBED_STATUSES");
    }
}
