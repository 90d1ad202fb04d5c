//! One event, one transaction: record it, move the subscription state, bring
//! the user's active sessions in step.
//!
//! Exactly once: the event id's primary key in `sw_events` decides, so a
//! concurrent duplicate (on any instance) waits for the first delivery's
//! commit and then finds the id taken.
//!
//! Locks, always taken in this order so that two events cannot deadlock:
//! 1. the *owner* of the subscription (its customer): every writer of a
//!    subscription's row holds it, so its state is read and written by one
//!    transaction at a time;
//! 2. the *user*: every writer of a user's subscriptions and sessions holds
//!    it, so the user's summary is computed from settled rows.
//!
//! Transaction-scoped advisory locks end with the transaction, even when the
//! instance dies.

use sqlx::{PgConnection, Postgres, Transaction};

use super::Store;
use crate::event::{Action, Checkout, Event, SubscriptionUpdate};
use crate::ordering::{Stamped, supersedes};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed and the user's sessions were updated.
    Applied {
        sessions_updated: u64,
        /// Active sessions whose `session_data` is not a JSON object.
        sessions_skipped: u64,
    },
    /// Older than the state already recorded: recorded, changed nothing.
    Stale,
    /// Seen before: changed nothing.
    Duplicate,
    /// No user could be found for it: recorded (a subscription's state is
    /// kept until its customer is tied to a user).
    UnknownUser,
    /// A type or a case that needs nothing done: recorded.
    Ignored,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::UnknownUser => "unknown_user",
            Self::Ignored => "ignored",
        }
    }
}

/// Advisory lock classes (first key of `pg_advisory_xact_lock(int, int)`).
/// The two-key form does not overlap with the one-key form the purge uses.
const OWNER_LOCK: i32 = 0x5357_0001;
const USER_LOCK: i32 = 0x5357_0002;

/// The checkout's claim on the user's state: "active" as of its `created`.
const CHECKOUT_STATUS: &str = "active";

/// A subscription state as this store writes it.
struct NewState<'a> {
    key: &'a str,
    username: Option<&'a str>,
    customer: Option<&'a str>,
    status: &'a str,
    current_period_end: Option<i64>,
    from_checkout: bool,
}

impl Store {
    /// Applies `event` once. An error means nothing was recorded: the caller
    /// answers so that Stripe delivers again.
    pub async fn apply(&self, event: &Event) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let first_delivery = sqlx::query(
            "INSERT INTO sw_events (event_id, event_type, created) \
             VALUES ($1, $2, to_timestamp($3)) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(event.created as f64)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first_delivery {
            tx.rollback().await?;
            return Ok(Outcome::Duplicate);
        }

        let (outcome, username) = match &event.action {
            Action::Checkout(checkout) => self.checkout(&mut tx, event, checkout).await?,
            Action::Subscription(update) => self.subscription(&mut tx, event, update).await?,
            Action::Invoice(note) => {
                let username = match &note.username {
                    Some(name) => Some(name.clone()),
                    None => customer_username(&mut tx, note.customer.as_deref()).await?,
                };
                (Outcome::Ignored, username)
            }
            Action::Unhandled => (Outcome::Ignored, None),
        };

        sqlx::query("UPDATE sw_events SET outcome = $2, username = $3 WHERE event_id = $1")
            .bind(&event.id)
            .bind(outcome.as_str())
            .bind(username.as_deref())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn checkout(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        checkout: &Checkout,
    ) -> Result<(Outcome, Option<String>), sqlx::Error> {
        let key = match &checkout.subscription {
            Some(subscription) => subscription.clone(),
            None => format!("checkout:{}", checkout.session_id),
        };
        lock(tx, OWNER_LOCK, checkout.customer.as_deref().unwrap_or(&key)).await?;
        let Some(username) = checkout.username.as_deref() else {
            return Ok((Outcome::UnknownUser, None));
        };

        let mut adopted = 0;
        if let Some(customer) = checkout.customer.as_deref() {
            sqlx::query(
                "INSERT INTO sw_customers (customer_id, username) VALUES ($1, $2) \
                 ON CONFLICT (customer_id) DO UPDATE SET username = EXCLUDED.username, updated_at = now()",
            )
            .bind(customer)
            .bind(username)
            .execute(&mut **tx)
            .await?;
            lock(tx, USER_LOCK, username).await?;
            // Subscription events that came before this checkout now have a user.
            adopted = sqlx::query(
                "UPDATE sw_subscriptions SET username = $2, updated_at = now() \
                 WHERE customer_id = $1 AND username IS NULL",
            )
            .bind(customer)
            .bind(username)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        } else {
            lock(tx, USER_LOCK, username).await?;
        }

        let claimed = checkout.paid && {
            let current = recorded(tx, &key).await?;
            self.propose(
                tx,
                event,
                current.as_ref(),
                NewState {
                    key: &key,
                    username: Some(username),
                    customer: checkout.customer.as_deref(),
                    status: CHECKOUT_STATUS,
                    current_period_end: None,
                    from_checkout: true,
                },
            )
            .await?
        };

        let outcome = if claimed || adopted > 0 {
            self.refresh_sessions(tx, username).await?
        } else if checkout.paid {
            Outcome::Stale
        } else {
            Outcome::Ignored
        };
        Ok((outcome, Some(username.to_owned())))
    }

    async fn subscription(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        update: &SubscriptionUpdate,
    ) -> Result<(Outcome, Option<String>), sqlx::Error> {
        let owner = update.customer.as_deref().unwrap_or(&update.subscription);
        lock(tx, OWNER_LOCK, owner).await?;

        let current = recorded(tx, &update.subscription).await?;
        let username = match (&update.username, &current) {
            (Some(name), _) => {
                if let Some(customer) = &update.customer {
                    // Remember who this customer is, unless a checkout said so already.
                    sqlx::query(
                        "INSERT INTO sw_customers (customer_id, username) VALUES ($1, $2) \
                         ON CONFLICT (customer_id) DO NOTHING",
                    )
                    .bind(customer)
                    .bind(name)
                    .execute(&mut **tx)
                    .await?;
                }
                Some(name.clone())
            }
            (
                None,
                Some(Recorded {
                    username: Some(known),
                    ..
                }),
            ) => Some(known.clone()),
            (None, _) => customer_username(tx, update.customer.as_deref()).await?,
        };
        if let Some(name) = &username {
            lock(tx, USER_LOCK, name).await?;
        }

        let changes = self
            .propose(
                tx,
                event,
                current.as_ref(),
                NewState {
                    key: &update.subscription,
                    username: username.as_deref(),
                    customer: update.customer.as_deref(),
                    status: &update.status,
                    current_period_end: update.current_period_end,
                    from_checkout: false,
                },
            )
            .await?;

        let Some(name) = username else {
            return Ok((Outcome::UnknownUser, None));
        };
        if !changes {
            return Ok((Outcome::Stale, Some(name)));
        }
        // A paid checkout without a subscription of its own stood in for the
        // subscription until now.
        sqlx::query(
            "DELETE FROM sw_subscriptions WHERE username = $1 AND from_checkout \
             AND subscription_id LIKE 'checkout:%' AND event_created <= to_timestamp($2)",
        )
        .bind(&name)
        .bind(event.created as f64)
        .execute(&mut **tx)
        .await?;
        let outcome = self.refresh_sessions(tx, &name).await?;
        Ok((outcome, Some(name)))
    }

    /// Writes `state` if it supersedes `current`, what is recorded for its
    /// key; returns whether it did.
    async fn propose(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        current: Option<&Recorded>,
        state: NewState<'_>,
    ) -> Result<bool, sqlx::Error> {
        let incoming = Stamped {
            status: state.status,
            created: event.created,
        };
        let changes = current.is_none_or(|current| {
            supersedes(
                incoming,
                Stamped {
                    status: &current.status,
                    created: current.created,
                },
            )
        });
        if changes {
            self.write_state(tx, event, state).await?;
        }
        Ok(changes)
    }

    async fn write_state(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        state: NewState<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sw_subscriptions (subscription_id, username, customer_id, status, subscribed, \
                 current_period_end, event_created, event_id, from_checkout) \
             VALUES ($1, $2, $3, $4, $5, to_timestamp($6), to_timestamp($7), $8, $9) \
             ON CONFLICT (subscription_id) DO UPDATE SET \
                 username = COALESCE(EXCLUDED.username, sw_subscriptions.username), \
                 customer_id = COALESCE(EXCLUDED.customer_id, sw_subscriptions.customer_id), \
                 status = EXCLUDED.status, \
                 subscribed = EXCLUDED.subscribed, \
                 current_period_end = COALESCE(EXCLUDED.current_period_end, sw_subscriptions.current_period_end), \
                 event_created = EXCLUDED.event_created, \
                 event_id = EXCLUDED.event_id, \
                 from_checkout = EXCLUDED.from_checkout, \
                 updated_at = now()",
        )
        .bind(state.key)
        .bind(state.username)
        .bind(state.customer)
        .bind(state.status)
        .bind(self.counts_as_subscribed(state.status))
        .bind(state.current_period_end.map(|t| t as f64))
        .bind(event.created as f64)
        .bind(&event.id)
        .bind(state.from_checkout)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

async fn lock(conn: &mut PgConnection, class: i32, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(class)
        .bind(key)
        .execute(conn)
        .await
        .map(drop)
}

/// A subscription's state as recorded.
struct Recorded {
    status: String,
    /// Unix seconds of the event that set it.
    created: i64,
    username: Option<String>,
}

async fn recorded(conn: &mut PgConnection, key: &str) -> Result<Option<Recorded>, sqlx::Error> {
    let row: Option<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT status, extract(epoch FROM event_created)::bigint, username \
         FROM sw_subscriptions WHERE subscription_id = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(status, created, username)| Recorded {
        status,
        created,
        username,
    }))
}

async fn customer_username(
    conn: &mut PgConnection,
    customer: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    let Some(customer) = customer else {
        return Ok(None);
    };
    sqlx::query_scalar("SELECT username FROM sw_customers WHERE customer_id = $1")
        .bind(customer)
        .fetch_optional(conn)
        .await
}
