//! An event applied again (`session-worker replay`): its record is taken
//! back and `sw_apply_event` runs as for a first delivery, in one
//! transaction, so the ordering rules judge it afresh (an older event is
//! `stale`, a final state stays final) and the record says what the replay
//! did.

use super::apply::{Call, outcome_of};
use super::{Outcome, Store};
use crate::event::{Event, SubscriptionUpdate};

impl Store {
    /// [`Store::apply`] for an event that may have been recorded before.
    /// Its `sw_events` row is replaced (received now, the new outcome); a
    /// delivery of the same event meanwhile waits for this transaction and
    /// is then a duplicate.
    pub async fn apply_again(
        &self,
        event: &Event,
        truth: Option<&SubscriptionUpdate>,
    ) -> Result<Outcome, sqlx::Error> {
        let call = Call::settled(event, truth);
        let mut transaction = self.pool().begin().await?;
        sqlx::query("DELETE FROM sw_events WHERE event_id = $1")
            .bind(&event.id)
            .execute(&mut *transaction)
            .await?;
        let (outcome, _, updated, skipped) = self.call(&mut transaction, event, &call).await?;
        transaction.commit().await?;
        outcome_of(&outcome, updated, skipped)
    }
}
