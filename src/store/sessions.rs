//! Bringing a user's active sessions in step with their subscriptions.

use sqlx::{Postgres, Transaction};

use super::{Outcome, Store};
use crate::session_data::with_subscription;

impl Store {
    /// Writes the user's summary into every active session; the caller holds
    /// the user's lock.
    pub(super) async fn refresh_sessions(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        username: &str,
    ) -> Result<Outcome, sqlx::Error> {
        // A subscribed subscription's status if there is one, else the latest.
        let (subscribed, status): (Option<bool>, Option<String>) = sqlx::query_as(
            "SELECT bool_or(subscribed), \
                    (array_agg(status ORDER BY subscribed DESC, event_created DESC))[1] \
             FROM sw_subscriptions WHERE username = $1",
        )
        .bind(username)
        .fetch_one(&mut **tx)
        .await?;
        let subscribed = subscribed.unwrap_or(false);
        let status = status.unwrap_or_else(|| "none".to_owned());

        // `user_sessions` holds UTC in `TIMESTAMP` columns: "now" is taken in
        // UTC whatever the server's or the connection's `TimeZone` is.
        // Ordered, so that two writers lock rows in the same order.
        let sessions: Vec<(i32, Option<String>)> = sqlx::query_as(
            "SELECT id, session_data FROM user_sessions \
             WHERE username = $1 AND is_active AND expires_at > (now() AT TIME ZONE 'UTC') \
             ORDER BY id FOR UPDATE",
        )
        .bind(username)
        .fetch_all(&mut **tx)
        .await?;

        let mut ids = Vec::with_capacity(sessions.len());
        let mut data = Vec::with_capacity(sessions.len());
        let mut skipped = 0;
        for (id, session_data) in sessions {
            match with_subscription(session_data.as_deref(), subscribed, &status) {
                Ok(updated) => {
                    ids.push(id);
                    data.push(updated);
                }
                Err(why) => {
                    skipped += 1;
                    tracing::warn!(session_row = id, username, reason = %why, "session left untouched");
                }
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE user_sessions AS s \
                 SET session_data = u.data, updated_at = (now() AT TIME ZONE 'UTC') \
                 FROM unnest($1::int[], $2::text[]) AS u(id, data) WHERE s.id = u.id",
            )
            .bind(&ids)
            .bind(&data)
            .execute(&mut **tx)
            .await?;
        }
        Ok(Outcome::Applied {
            sessions_updated: ids.len() as u64,
            sessions_skipped: skipped,
        })
    }
}
