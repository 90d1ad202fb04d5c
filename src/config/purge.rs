//! When and how expired sessions and old events are purged: `PURGE_SCHEDULE`,
//! `PURGE_BATCH_SIZE`, `EVENT_RETENTION`.

use std::time::Duration;

use super::{ConfigError, CronSchedule, Env};

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

#[cfg(test)]
mod tests {
    use super::*;

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
