//! The settings `doctor` checks without a database: the webhook secret's
//! form, and `STRIPE_SECRET_KEY` against `STRIPE_MODE` and Stripe's API.

use secrecy::ExposeSecret;

use super::Check;
use crate::config::{Env, StripeApiConfig, StripeMode};
use crate::stripe_api::{Retry, StripeApi};

/// Enough to tell a working key from a refused one, not to wait out an
/// outage.
const PROBE: Retry = Retry {
    attempts: 2,
    attempt_timeout: std::time::Duration::from_secs(10),
    first_backoff: std::time::Duration::from_secs(1),
    max_backoff: std::time::Duration::from_secs(1),
    budget: std::time::Duration::from_secs(20),
};

/// `STRIPE_WEBHOOK_SECRET`: one or more `whsec_...`, comma-separated.
pub fn webhook_secret(env: &Env) -> Check {
    const SUBJECT: &str = "STRIPE_WEBHOOK_SECRET";
    let Some(raw) = env.value("STRIPE_WEBHOOK_SECRET") else {
        return Check::fail(
            SUBJECT,
            "not set: `serve` needs the endpoint's signing secret (whsec_...), from Stripe's dashboard, Developers > Webhooks > the endpoint > Signing secret",
        );
    };
    let secrets: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let count = secrets.len();
    for (n, secret) in secrets.iter().enumerate() {
        let which = if count == 1 {
            "the value".to_owned()
        } else {
            format!("value {} of {count}", n + 1)
        };
        // Say what it looks like, never what it is.
        let problem = if secret.starts_with("sk_") || secret.starts_with("rk_") {
            Some("is an API key, which belongs in STRIPE_SECRET_KEY")
        } else if secret.starts_with("pk_") {
            Some("is a publishable key")
        } else if !secret.starts_with("whsec_") {
            Some("does not start with whsec_")
        } else if secret.len() < "whsec_".len() + 16 {
            Some("is too short to be a signing secret")
        } else if !secret[6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b))
        {
            Some("holds characters no signing secret has (a quote or a space pasted with it?)")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Check::fail(
                SUBJECT,
                format!(
                    "{which} {problem}: set the endpoint's signing secret whsec_... (comma-separated during a rotation)"
                ),
            );
        }
    }
    if count == 0 {
        return Check::fail(SUBJECT, "holds no secret: set whsec_...");
    }
    let rotation = if count > 1 {
        " (a rotation: drop the old one once Stripe signs with the new)"
    } else {
        ""
    };
    Check::pass(
        SUBJECT,
        format!("{count} signing secret(s) of the form whsec_...{rotation}"),
    )
}

/// `STRIPE_MODE`, the key's form and mode, and one call to the API.
pub async fn stripe_api(env: &Env) -> Vec<Check> {
    const SUBJECT: &str = "Stripe API";
    // The settings' own parsing: `StripeMode::from_env` refuses an unknown
    // mode and a key of the other mode, so doctor says what `serve` would.
    let settings =
        StripeMode::from_env(env).and_then(|mode| Ok((mode, StripeApiConfig::from_env(env)?)));
    let (mode, config) = match settings {
        Ok(settings) => settings,
        Err(error) => return vec![Check::fail(error.variable, error.problem)],
    };
    let mode = mode.as_str();
    let Some(key) = &config.secret_key else {
        return vec![Check::pass(
            SUBJECT,
            "STRIPE_SECRET_KEY not set: no API calls (`reconcile` and `replay` need a key; ties and invoices are then settled from the payload alone)",
        )];
    };
    let key_mode = StripeMode::of_key(key.expose_secret()).map(StripeMode::as_str);
    let api = match StripeApi::from_config(&config) {
        Ok(Some(api)) => api,
        Ok(None) => unreachable!("the key is set"),
        Err(error) => return vec![Check::fail(error.variable, error.problem)],
    };
    match api.probe(&PROBE).await {
        Ok(probe) => {
            let seen = match (probe.newest_event_livemode, key_mode) {
                (Some(live), Some(key_mode)) if (key_mode == "live") != live => {
                    return vec![Check::fail(
                        SUBJECT,
                        format!(
                            "the API lists {} events for a {key_mode}-mode key: check STRIPE_API_BASE",
                            if live { "live" } else { "test" }
                        ),
                    )];
                }
                (Some(_), _) => "its newest event",
                (None, _) => "no event yet",
            };
            vec![Check::pass(
                SUBJECT,
                format!(
                    "{} answered a {}-mode key ({seen}); STRIPE_MODE {mode}",
                    config.api_base.trim_end_matches('/'),
                    key_mode.unwrap_or("unknown")
                ),
            )]
        }
        Err(error) => vec![Check::fail(
            SUBJECT,
            format!(
                "{} did not accept the key: {error} (the key needs read access to events and subscriptions)",
                config.api_base.trim_end_matches('/')
            ),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_check(value: &str) -> Check {
        webhook_secret(&Env::from_pairs([("STRIPE_WEBHOOK_SECRET", value)]))
    }

    #[test]
    fn signing_secrets_pass_and_keys_fail_without_being_shown() {
        assert!(secret_check("whsec_0123456789abcdefABCDEF0123456789").ok);
        assert!(secret_check("whsec_0123456789abcdefABCDEF01, whsec_abcdefABCDEF0123456789ab").ok);
        for bad in [
            "sk_test_topsecret0123456789",
            "whsec_short",
            "topsecret0123456789abcdef",
            "whsec_0123456789abcdef topsecret",
        ] {
            let check = secret_check(bad);
            assert!(!check.ok, "{bad:?}");
            assert!(!check.to_string().contains("topsecret"), "{check}");
        }
        assert!(!webhook_secret(&Env::from_pairs([])).ok);
    }
}
