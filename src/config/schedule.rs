//! Cron schedules among the settings, and `RECONCILE_SCHEDULE`.

use super::{ConfigError, Env};

/// `RECONCILE_SCHEDULE` (default `off`): when `serve` runs `reconcile`.
/// It needs `STRIPE_SECRET_KEY`; the caller checks that.
pub fn reconcile_schedule(env: &Env) -> Result<Option<CronSchedule>, ConfigError> {
    match env.get("RECONCILE_SCHEDULE") {
        None => Ok(None),
        Some(raw) if raw.eq_ignore_ascii_case("off") => Ok(None),
        Some(raw) => CronSchedule::parse("RECONCILE_SCHEDULE", raw).map(Some),
    }
}

/// A cron expression with seconds that the scheduler accepts: only built by
/// [`CronSchedule::parse`], so a bad one stops the program at start rather
/// than when the schedule is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule(String);

impl CronSchedule {
    pub(super) fn parse(variable: &'static str, raw: &str) -> Result<Self, ConfigError> {
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
