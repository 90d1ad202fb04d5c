//! Settings, read once from the environment at start.
//!
//! Every error names the variable at fault, and no error or `Debug` output
//! ever contains a secret's value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

mod urls;

mod endpoint;
pub use endpoint::{MetricsToken, StripeMode};

pub mod sessions;

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

/// How to reach the database.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// Holds a password: kept out of `Debug`.
    pub url: SecretString,
    /// `url` parsed whole at start (host, port, database, TLS mode...), so
    /// that a URL no connection could use stops the program there.
    pub options: PgConnectOptions,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &"[redacted]")
            .finish()
    }
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // The value may hold a password: say what is wrong, not what it is.
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        let options = urls::database_options(url)?;
        Ok(Self {
            url: SecretString::from(url.to_owned()),
            options,
        })
    }
}

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

/// `RECONCILE_SCHEDULE` (default `off`): when `serve` runs `reconcile`.
/// It needs `STRIPE_SECRET_KEY`; the caller checks that.
pub fn reconcile_schedule(env: &Env) -> Result<Option<CronSchedule>, ConfigError> {
    match env.get("RECONCILE_SCHEDULE") {
        None => Ok(None),
        Some(raw) if raw.eq_ignore_ascii_case("off") => Ok(None),
        Some(raw) => CronSchedule::parse("RECONCILE_SCHEDULE", raw).map(Some),
    }
}

/// Where the HTTP server listens.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub host: IpAddr,
    pub port: u16,
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            host: env.parsed("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address")?,
            port: env.parsed("PORT", 8080, "a port number (0-65535)")?,
        })
    }
}

/// When and how the expired sessions are purged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeConfig {
    /// `None` when `PURGE_SCHEDULE` is `off`.
    pub schedule: Option<CronSchedule>,
    /// Rows deleted per statement, each statement its own transaction.
    pub batch_size: u32,
    /// Recorded events received longer ago than this are deleted by the
    /// purge rounds (`EVENT_RETENTION`).
    pub event_retention: Duration,
}

impl PurgeConfig {
    /// Bounds for `PURGE_BATCH_SIZE`: a batch above this would hold its row
    /// locks and write its WAL for too long to still be a short transaction.
    pub const MAX_BATCH_SIZE: u32 = 100_000;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let schedule = match env.get("PURGE_SCHEDULE") {
            Some(raw) if raw.eq_ignore_ascii_case("off") => None,
            raw => Some(CronSchedule::parse(
                "PURGE_SCHEDULE",
                raw.unwrap_or("0 */15 * * * *"),
            )?),
        };
        let expected = format!("a whole number from 1 to {}", Self::MAX_BATCH_SIZE);
        let batch_size: u32 = env.parsed("PURGE_BATCH_SIZE", 5000, &expected)?;
        if !(1..=Self::MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(ConfigError::new(
                "PURGE_BATCH_SIZE",
                format!("must be {expected}, got {batch_size}"),
            ));
        }
        let event_retention = match env.get("EVENT_RETENTION") {
            None => Self::DEFAULT_EVENT_RETENTION,
            Some(raw) => parse_retention(raw).map_err(|why| {
                ConfigError::new("EVENT_RETENTION", format!("{why}, got {raw:?}"))
            })?,
        };
        Ok(Self {
            schedule,
            batch_size,
            event_retention,
        })
    }

    pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(60 * DAY_SECS);
    /// Stripe resends an event for up to 30 days: its id must be known
    /// until then, or it would be applied again.
    pub const MIN_EVENT_RETENTION: Duration = Duration::from_secs(31 * DAY_SECS);
}

const DAY_SECS: u64 = 24 * 3600;

/// `60d`, `1000h`, ...: a whole number and a unit (`d`, `h`, `m`, `s`), at
/// least [`PurgeConfig::MIN_EVENT_RETENTION`].
fn parse_retention(raw: &str) -> Result<Duration, &'static str> {
    const EXPECTED: &str =
        "must be a whole number of days (60d), hours, minutes or seconds, at least 31d";
    let split = raw.len().saturating_sub(1);
    let (number, unit) = (
        raw.get(..split).unwrap_or(""),
        raw.get(split..).unwrap_or(""),
    );
    let unit_secs = match unit {
        "d" => DAY_SECS,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(EXPECTED),
    };
    let number: u64 = number.parse().map_err(|_| EXPECTED)?;
    let retention = Duration::from_secs(number.checked_mul(unit_secs).ok_or(EXPECTED)?);
    if retention < PurgeConfig::MIN_EVENT_RETENTION {
        return Err(EXPECTED);
    }
    Ok(retention)
}

/// A cron expression with seconds that the scheduler accepts: only built by
/// [`CronSchedule::parse`], so a bad one stops the program at start rather
/// than when the schedule is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule(String);

impl CronSchedule {
    fn parse(variable: &'static str, raw: &str) -> Result<Self, ConfigError> {
        // The scheduler's own parser: what passes here is what it will run.
        match tokio_cron_scheduler::Job::new_async(raw, |_, _| Box::pin(async {})) {
            Ok(_) => Ok(Self(raw.to_owned())),
            Err(_) => Err(ConfigError::new(
                variable,
                format!(
                    "must be a cron expression with seconds (sec min hour day month weekday [year]), \
                     e.g. \"0 */15 * * * *\", or off; got {raw:?}"
                ),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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

        let url = DatabaseConfig::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "mysql://root:hunter2@db",
        )]))
        .unwrap_err();
        assert_eq!(url.variable, "DATABASE_URL");
        assert!(!url.to_string().contains("hunter2"));

        // Parsed whole at start: a URL no connection could use stops there.
        for bad in [
            "postgres://root:hunter2@db:80800/app",
            "postgres://root:hunter2@db:5432/app?sslmode=sometimes",
        ] {
            let error =
                DatabaseConfig::from_env(&Env::from_pairs([("DATABASE_URL", bad)])).unwrap_err();
            assert_eq!(error.variable, "DATABASE_URL", "{bad}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let config = DatabaseConfig::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "postgresql://app:pw@dpg-abc-a:5433/app_db",
        )]))
        .unwrap();
        assert_eq!(config.options.get_port(), 5433);
        assert_eq!(config.options.get_database(), Some("app_db"));

        let port = HttpConfig::from_env(&Env::from_pairs([("PORT", "80800")])).unwrap_err();
        assert_eq!(port.variable, "PORT");
    }

    #[test]
    fn purge_defaults_follow_the_contract() {
        let config = PurgeConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!(
            config.schedule.as_ref().map(CronSchedule::as_str),
            Some("0 */15 * * * *")
        );
        assert_eq!(config.batch_size, 5000);
    }

    #[test]
    fn event_retention_is_at_least_31_days() {
        let retention = |raw: &str| {
            PurgeConfig::from_env(&Env::from_pairs([("EVENT_RETENTION", raw)]))
                .map(|config| config.event_retention)
        };
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        assert_eq!(
            PurgeConfig::from_env(&Env::from_pairs([]))
                .unwrap()
                .event_retention,
            days(60)
        );
        assert_eq!(retention("31d").unwrap(), days(31));
        assert_eq!(retention("365d").unwrap(), days(365));
        assert_eq!(retention("744h").unwrap(), days(31));
        for bad in [
            "30d",
            "743h",
            "60",
            "d",
            "-40d",
            "1.5d",
            "60 days",
            "99999999999999999d",
        ] {
            let error = retention(bad).unwrap_err();
            assert_eq!(error.variable, "EVENT_RETENTION", "{bad:?}");
        }
    }

    #[test]
    fn purge_schedule_off_disables_it() {
        for off in ["off", "OFF", " Off "] {
            let config =
                PurgeConfig::from_env(&Env::from_pairs([("PURGE_SCHEDULE", off)])).unwrap();
            assert_eq!(config.schedule, None, "{off:?}");
        }
        let config =
            PurgeConfig::from_env(&Env::from_pairs([("PURGE_SCHEDULE", "*/5 * * * * *")])).unwrap();
        assert_eq!(
            config.schedule.as_ref().map(CronSchedule::as_str),
            Some("*/5 * * * * *")
        );
    }

    #[test]
    fn purge_errors_name_the_variable() {
        // Five fields (no seconds) is the commonest mistake.
        for bad in [
            "*/15 * * * *",
            "every 15 minutes",
            "0 61 * * * *",
            "disabled",
        ] {
            let error =
                PurgeConfig::from_env(&Env::from_pairs([("PURGE_SCHEDULE", bad)])).unwrap_err();
            assert_eq!(error.variable, "PURGE_SCHEDULE", "{bad:?}");
        }
        for bad in ["0", "100001", "-1", "5k", "1.5"] {
            let error =
                PurgeConfig::from_env(&Env::from_pairs([("PURGE_BATCH_SIZE", bad)])).unwrap_err();
            assert_eq!(error.variable, "PURGE_BATCH_SIZE", "{bad:?}");
        }
        for good in ["1", "100000"] {
            let config =
                PurgeConfig::from_env(&Env::from_pairs([("PURGE_BATCH_SIZE", good)])).unwrap();
            assert_eq!(config.batch_size.to_string(), good);
        }
    }
}
