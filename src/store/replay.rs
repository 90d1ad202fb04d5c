//! An event applied again (`session-worker replay`): its record is taken
//! back and `sw_apply_event` runs as for a first delivery, in one
//! transaction, so the ordering rules judge it afresh (an older event is
//! `stale`, a final state stays final) and the record says what the replay
//! did.

use sqlx::Connection;

use super::apply::{Call, Truth, outcome_of};
use super::limit::{self, Armed};
use super::{Outcome, Store};
use crate::event::Event;

impl Store {
    /// [`Store::apply`] for an event that may have been recorded before.
    /// Its `sw_events` row is replaced (received now, the new outcome); a
    /// delivery of the same event meanwhile waits for this transaction and
    /// is then a duplicate.
    pub async fn apply_again(
        &self,
        event: &Event,
        truth: Option<&Truth>,
    ) -> Result<Outcome, sqlx::Error> {
        let call = Call::settled(event, truth);
        let (outcome, _, updated, skipped, _) = limit::within(async {
            // Bounded like every store call; cut off, the connection is
            // closed rather than given back mid-transaction.
            let mut conn = Armed::acquire(self.pool()).await?;
            let mut transaction = conn.connection().begin().await?;
            sqlx::query("DELETE FROM sw_events WHERE event_id = $1")
                .bind(&event.id)
                .execute(&mut *transaction)
                .await?;
            let answer = self.call(&mut transaction, event, &call).await?;
            transaction.commit().await?;
            conn.done();
            Ok(answer)
        })
        .await?;
        outcome_of(&outcome, updated, skipped)
    }
}
