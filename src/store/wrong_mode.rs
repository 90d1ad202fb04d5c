//! Events of the other Stripe mode (`STRIPE_MODE`): recorded, and nothing
//! else. A plain INSERT, apart from `sw_apply_event`: such an event must not
//! reach the rules that move subscriptions and sessions.

use super::Store;
use crate::event::Event;

/// The outcome recorded for them, and answered.
pub const WRONG_MODE: &str = "wrong_mode";

impl Store {
    /// Records `event` with the outcome `wrong_mode`; a second delivery of it
    /// changes nothing (the first record stays).
    pub async fn record_wrong_mode(&self, event: &Event) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sw_events (event_id, event_type, created, outcome) \
             VALUES ($1, $2, to_timestamp($3::bigint), $4) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(event.created)
        .bind(WRONG_MODE)
        .execute(self.pool())
        .await
        .map(drop)
    }
}
