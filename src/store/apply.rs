//! One event, one call of `sw_apply_event` (its latest version:
//! migrations/20261207100001_session_text_and_ownership.sql): record it once,
//! move the subscription's state by the ordering rules (or to what Stripe's
//! API said, if nothing newer was recorded meanwhile), and bring the active
//! sessions of every user concerned in step, in one round trip and one
//! statement, which PostgreSQL runs atomically.

use sqlx::PgConnection;

use super::limit::{self, Armed};
use super::{Store, connections};
use crate::event::{Action, Details, Event, SubscriptionUpdate};

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

/// The status a paid checkout stands for until its subscription speaks.
const CHECKOUT_STATUS: &str = "active";

/// The arguments of `sw_apply_event` for one event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Call<'a> {
    action: &'static str,
    key: Option<String>,
    customer: Option<&'a str>,
    username: Option<&'a str>,
    status: Option<&'a str>,
    period_end: Option<i64>,
    /// The status and period end Stripe's API answered, applied only if the
    /// subscription's state is still the one `truth_expect` set.
    truth_status: Option<&'a str>,
    truth_period_end: Option<i64>,
    truth_expect: Option<&'a str>,
    /// Items, cancellation and trial as JSON ([`crate::event::Details`]),
    /// from the payload and from the API.
    details: Option<String>,
    truth_details: Option<String>,
    /// An entitlement summary's features (lookup keys).
    features: Option<&'a [String]>,
}

/// A subscription as Stripe's API answered for an event, and the recorded
/// state the call was made against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub subscription: SubscriptionUpdate,
    /// The event that had set the subscription's recorded state before the
    /// call (`None`: no state was recorded). The answer is applied only if
    /// that is still so: a newer event recorded while the call was in flight
    /// wins over it (compare and set).
    pub state_event: Option<String>,
}

impl<'a> Call<'a> {
    /// The call for `event`, with `truth`, the subscription as the API had
    /// it, beside what the payload says (the store chooses).
    pub(super) fn settled(event: &'a Event, truth: Option<&'a Truth>) -> Self {
        let call = Self::of(event);
        match truth {
            None => call,
            Some(Truth {
                subscription: truth,
                state_event,
            }) => Self {
                key: Some(truth.subscription.clone()),
                customer: call.customer.or(truth.customer.as_deref()),
                username: call.username.or(truth.username.as_deref()),
                truth_status: Some(&truth.status),
                truth_period_end: truth.current_period_end.or(call.period_end),
                truth_expect: state_event.as_deref(),
                truth_details: Some(details_json(&truth.details)),
                ..call
            },
        }
    }

    fn of(event: &'a Event) -> Self {
        match &event.action {
            Action::Checkout(checkout) => Self {
                action: "checkout",
                key: Some(match &checkout.subscription {
                    Some(subscription) => subscription.clone(),
                    None => format!("checkout:{}", checkout.session_id),
                }),
                customer: checkout.customer.as_deref(),
                username: checkout.username.as_deref(),
                status: checkout.paid.then_some(CHECKOUT_STATUS),
                ..Self::default()
            },
            Action::Subscription(update) => Self {
                action: "subscription",
                key: Some(update.subscription.clone()),
                customer: update.customer.as_deref(),
                username: update.username.as_deref(),
                status: Some(&update.status),
                period_end: update.current_period_end,
                details: Some(details_json(&update.details)),
                ..Self::default()
            },
            Action::Invoice(note) => Self {
                action: "invoice",
                key: note.subscription.clone(),
                customer: note.customer.as_deref(),
                username: note.username.as_deref(),
                ..Self::default()
            },
            Action::Entitlements(summary) => Self {
                action: "entitlements",
                customer: summary.customer.as_deref(),
                features: Some(&summary.features),
                ..Self::default()
            },
            Action::Unhandled => Self {
                action: "unhandled",
                ..Self::default()
            },
        }
    }
}

fn details_json(details: &Details) -> String {
    serde_json::to_string(details).expect("plain data serializes")
}

impl Store {
    /// Applies `event` once; with `truth` (the subscription read from
    /// Stripe's API) its status stands whatever the recorded state says,
    /// unless that state changed since the call was made. An error means
    /// nothing was recorded: the caller answers so that Stripe delivers
    /// again.
    pub async fn apply(
        &self,
        event: &Event,
        truth: Option<&Truth>,
    ) -> Result<Outcome, sqlx::Error> {
        let call = Call::settled(event, truth);
        let mut lease = self.connections.acquire().await?;
        // Bounded: a connection that stopped answering costs a few seconds,
        // and the lease, dropped, closes it (never reused).
        let answer = match limit::within(self.call(lease.connection(), event, &call)).await {
            Ok(answer) => {
                lease.release();
                answer
            }
            // A connection reused without a check that turns out gone was
            // most likely ended by the server since its last use (a restart,
            // a failover). Once more on a new connection: safe, because the
            // same statement records the event id, so a first try that did
            // commit makes this one a duplicate.
            Err(error) if lease.unchecked() && connections::connection_lost(&error) => {
                drop(lease);
                let mut lease = self.connections.open().await?;
                let answer = limit::within(self.call(lease.connection(), event, &call)).await?;
                lease.release();
                answer
            }
            // The lease, dropped, closes its connection.
            Err(error) => return Err(error),
        };
        let (outcome, username, updated, skipped, skipped_ids) = answer;

        if skipped > 0 {
            // Row ids, never session ids: those are credentials.
            tracing::warn!(
                event_id = %event.id,
                username = username.as_deref(),
                sessions_skipped = skipped,
                session_row_ids = ?skipped_ids,
                "sessions left untouched: session_data is not a JSON object"
            );
        }
        outcome_of(&outcome, updated, skipped)
    }
}

/// `sw_apply_event`'s outcome as ours.
pub(super) fn outcome_of(
    outcome: &str,
    updated: i32,
    skipped: i32,
) -> Result<Outcome, sqlx::Error> {
    Ok(match outcome {
        "applied" => Outcome::Applied {
            sessions_updated: updated as u64,
            sessions_skipped: skipped as u64,
        },
        "stale" => Outcome::Stale,
        "duplicate" => Outcome::Duplicate,
        "unknown_user" => Outcome::UnknownUser,
        "ignored" => Outcome::Ignored,
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "sw_apply_event answered {other:?}"
            )));
        }
    })
}

/// What the store already holds about an event, read before applying it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// The event id was recorded before.
    pub seen: bool,
    /// The `created` (Unix seconds) of the event that set the subscription's
    /// current state, if it has one.
    pub state_created: Option<i64>,
    /// That event's id.
    pub state_event: Option<String>,
}

impl Store {
    /// One cheap SELECT (two primary-key lookups, no lock): has `event_id`
    /// been recorded, and when was `subscription`'s current state said?
    pub async fn recorded(
        &self,
        event_id: &str,
        subscription: &str,
    ) -> Result<Recorded, sqlx::Error> {
        let (seen, state_created, state_event): (bool, Option<i64>, Option<String>) =
            limit::within(async {
                let mut conn = Armed::acquire(&self.pool).await?;
                let answer = sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM sw_events WHERE event_id = $1), s.created, s.event_id \
                     FROM (SELECT 1) AS one LEFT JOIN ( \
                         SELECT extract(epoch FROM event_created)::bigint AS created, event_id \
                         FROM sw_subscriptions WHERE subscription_id = $2) AS s ON TRUE",
                )
                .bind(event_id)
                .bind(subscription)
                .fetch_one(conn.connection())
                .await?;
                conn.done();
                Ok(answer)
            })
        .await?;
        Ok(Recorded {
            seen,
            state_created,
            state_event,
        })
    }
}

/// What `sw_apply_event` answers: outcome, username, sessions updated and
/// skipped, and the row ids of those skipped.
pub(super) type Answer = (String, Option<String>, i32, i32, Vec<i32>);

impl Store {
    pub(super) async fn call(
        &self,
        connection: &mut PgConnection,
        event: &Event,
        call: &Call<'_>,
    ) -> Result<Answer, sqlx::Error> {
        if let Some(features) = call.features {
            return sqlx::query_as(
                "SELECT out_outcome, out_username, out_sessions_updated, out_sessions_skipped, \
                        out_skipped_ids \
                 FROM sw_apply_entitlements($1, $2, $3, $4, $5)",
            )
            .bind(&event.id)
            .bind(&event.kind)
            .bind(event.created)
            .bind(call.customer)
            .bind(features)
            .fetch_one(connection)
            .await;
        }
        sqlx::query_as(
            "SELECT out_outcome, out_username, out_sessions_updated, out_sessions_skipped, \
                    out_skipped_ids \
             FROM sw_apply_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                                 $13::jsonb, $14::jsonb, $15)",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(event.created)
        .bind(call.action)
        .bind(call.key.as_deref())
        .bind(call.customer)
        .bind(call.username)
        .bind(call.status)
        .bind(call.period_end)
        .bind(call.truth_status)
        .bind(call.truth_period_end)
        .bind(call.truth_expect)
        .bind(call.details.as_deref())
        .bind(call.truth_details.as_deref())
        .bind(&*self.subscribed_statuses)
        .fetch_one(connection)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Checkout, InvoiceNote};

    fn event(action: Action) -> Event {
        Event {
            id: "evt_1".into(),
            kind: "x".into(),
            created: 1,
            livemode: None,
            account: None,
            action,
        }
    }

    #[test]
    fn a_paid_checkout_claims_active_for_its_subscription_or_itself() {
        let mut checkout = Checkout {
            session_id: "cs_1".into(),
            username: Some("ann".into()),
            customer: Some("cus_1".into()),
            subscription: Some("sub_1".into()),
            paid: true,
        };
        let with_subscription = event(Action::Checkout(checkout.clone()));
        let call = Call::of(&with_subscription);
        assert_eq!(
            (call.key.as_deref(), call.status),
            (Some("sub_1"), Some("active"))
        );

        checkout.subscription = None;
        checkout.paid = false;
        let one_off_unpaid = event(Action::Checkout(checkout));
        let call = Call::of(&one_off_unpaid);
        assert_eq!(
            (call.key.as_deref(), call.status),
            (Some("checkout:cs_1"), None)
        );
    }

    #[test]
    fn invoices_and_other_types_state_no_status() {
        let invoice = event(Action::Invoice(InvoiceNote {
            customer: Some("cus_1".into()),
            subscription: Some("sub_1".into()),
            username: None,
        }));
        assert_eq!(Call::of(&invoice).status, None);
        assert_eq!(Call::of(&invoice).action, "invoice");
        assert_eq!(Call::of(&event(Action::Unhandled)).action, "unhandled");
    }

    #[test]
    fn the_truth_goes_beside_the_payload_and_fills_what_it_lacks() {
        let invoice = event(Action::Invoice(InvoiceNote {
            customer: None,
            subscription: Some("sub_1".into()),
            username: Some("ann".into()),
        }));
        let truth = Truth {
            subscription: SubscriptionUpdate {
                subscription: "sub_1".into(),
                customer: Some("cus_1".into()),
                username: Some("bob".into()),
                status: "past_due".into(),
                current_period_end: Some(9),
                details: Default::default(),
            },
            state_event: Some("evt_0".into()),
        };
        let call = Call::settled(&invoice, Some(&truth));
        assert_eq!(
            call,
            Call {
                action: "invoice",
                key: Some("sub_1".into()),
                customer: Some("cus_1"),
                username: Some("ann"),
                status: None,
                period_end: None,
                truth_status: Some("past_due"),
                truth_period_end: Some(9),
                truth_expect: Some("evt_0"),
                truth_details: Some(
                    r#"{"items":[],"cancel_at_period_end":false,"cancel_at":null,"trial_end":null}"#
                        .into()
                ),
                ..Call::default()
            }
        );
        assert_eq!(Call::settled(&invoice, None).truth_status, None);
    }
}
