//! Events of the other Stripe mode (`STRIPE_MODE`): recorded, and nothing
//! else. A plain INSERT, apart from `sw_apply_event`: such an event must not
//! reach the rules that move subscriptions and sessions.

use super::Store;
use super::limit::{self, Armed};
use crate::event::Event;

/// The outcome recorded for them, and answered.
pub const WRONG_MODE: &str = "wrong_mode";

impl Store {
    /// Records `event` with the outcome `wrong_mode`; a second delivery of it
    /// changes nothing (the first record stays).
    pub async fn record_wrong_mode(&self, event: &Event) -> Result<(), sqlx::Error> {
        // Bounded, on an armed connection: a call cut short (the webhook's
        // deadline, a database that stopped answering) closes its connection
        // instead of handing it back to a pool whose release ping may hang.
        limit::within(async {
            let mut conn = Armed::acquire(self.pool()).await?;
            sqlx::query(
                "INSERT INTO sw_events (event_id, event_type, created, outcome) \
                 VALUES ($1, $2, to_timestamp($3::bigint), $4) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&event.id)
            .bind(&event.kind)
            .bind(event.created)
            .bind(WRONG_MODE)
            .execute(conn.connection())
            .await?;
            conn.done();
            Ok(())
        })
        .await
    }
}
