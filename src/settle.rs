//! An event on its way to the store, with the truth from Stripe's API when
//! the payload cannot settle it alone: event -> [subscription from the API]
//! -> store. The webhook and `reconcile` both apply events through
//! [`Settler::apply`].
//!
//! Without an API key nothing here calls the API or reads the store first:
//! the event goes to the store as it is.

use std::borrow::Cow;
use std::sync::Arc;

use crate::event::{self, Action, EntitlementSummary, Event, SubscriptionUpdate};
use crate::store::{Outcome, Recorded, Store, Truth};
use crate::stripe_api::{Retry, StripeApi, StripeApiError};

/// What to learn from the API before applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The payload says all there is to say (or the event was seen before,
    /// and the store will say so).
    Payload,
    /// Fetch this subscription and apply what the API says.
    Fetch(String),
}

/// The subscription an event would fetch, before looking at the store:
/// `None` for events that never need the API.
pub fn candidate(event: &Event) -> Option<&str> {
    match &event.action {
        Action::Invoice(note) => note.subscription.as_deref(),
        Action::Subscription(update) => Some(&update.subscription),
        Action::Checkout(_) | Action::Entitlements(_) | Action::Unhandled => None,
    }
}

/// Pure: given what the store holds, whether `event` needs the API.
///
/// - `invoice.paid` / `invoice.payment_failed` carry no subscription status:
///   their subscription's status is fetched.
/// - A subscription event whose `created` ties with the state recorded for
///   its subscription cannot be ordered by its payload (one-second
///   resolution): the subscription is fetched.
/// - An event seen before is left to the store, which answers `duplicate`.
pub fn decide(event: &Event, recorded: &Recorded) -> Settlement {
    let Some(subscription) = candidate(event) else {
        return Settlement::Payload;
    };
    if recorded.seen {
        return Settlement::Payload;
    }
    match &event.action {
        Action::Invoice(_) => Settlement::Fetch(subscription.to_owned()),
        Action::Subscription(_) if recorded.state_created == Some(event.created) => {
            Settlement::Fetch(subscription.to_owned())
        }
        _ => Settlement::Payload,
    }
}

/// Why an event was not applied; nothing of it was recorded.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Api(#[from] StripeApiError),
}

/// The store, and the API when a key is set; cheap to clone.
#[derive(Clone, Debug)]
pub struct Settler {
    store: Store,
    api: Option<StripeApi>,
    username_key: Arc<str>,
}

impl Settler {
    pub fn new(store: Store, api: Option<StripeApi>, username_key: Arc<str>) -> Self {
        Self {
            store,
            api,
            username_key,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn api(&self) -> Option<&StripeApi> {
        self.api.as_ref()
    }

    pub fn username_key(&self) -> &str {
        &self.username_key
    }

    /// Applies `event` once, with the subscription from the API when
    /// [`decide`] asks for it. API calls are retried as `retry` says; when
    /// they still fail, nothing is recorded and the error says so (the
    /// webhook answers 503 and Stripe delivers again).
    ///
    /// The API's answer is applied only if the subscription's state is still
    /// the one read here before the call (the store compares and sets): an
    /// event recorded while the call was in flight may be newer than the
    /// answer, and then the payload goes under the ordering rules instead.
    pub async fn apply(&self, event: &Event, retry: &Retry) -> Result<Outcome, SettleError> {
        let (event, truth) = self.settle(event, retry, false).await?;
        Ok(self.store.apply(&event, truth.as_ref()).await?)
    }

    /// [`Settler::apply`] for an event recorded before (`replay`): settled
    /// as if it were new, then applied again under the ordering rules.
    pub async fn apply_again(&self, event: &Event, retry: &Retry) -> Result<Outcome, SettleError> {
        let (event, truth) = self.settle(event, retry, true).await?;
        Ok(self.store.apply_again(&event, truth.as_ref()).await?)
    }

    /// The event as it goes to the store (an entitlement summary with more
    /// pages, read whole), and what the API says of its subscription when
    /// [`decide`] asks for it; `again` ignores that the event was recorded.
    async fn settle<'e>(
        &self,
        event: &'e Event,
        retry: &Retry,
        again: bool,
    ) -> Result<(Cow<'e, Event>, Option<Truth>), SettleError> {
        if let Action::Entitlements(summary) = &event.action
            && summary.has_more
        {
            let whole = self.whole_summary(event, summary, retry).await?;
            return Ok((whole.map_or(Cow::Borrowed(event), Cow::Owned), None));
        }
        let (Some(api), Some(subscription)) = (&self.api, candidate(event)) else {
            return Ok((Cow::Borrowed(event), None));
        };
        let mut recorded = self.store.recorded(&event.id, subscription).await?;
        if again {
            recorded.seen = false;
        }
        let truth = match decide(event, &recorded) {
            Settlement::Payload => None,
            Settlement::Fetch(id) => {
                self.fetch(api, event, &id, retry)
                    .await?
                    .map(|subscription| Truth {
                        subscription,
                        state_event: recorded.state_event,
                    })
            }
        };
        Ok((Cow::Borrowed(event), truth))
    }

    /// A summary that lists one page of more: the event with every page
    /// read from the API in place of its list; `None` (apply the listed
    /// ones) without a key, or without a customer to ask about.
    async fn whole_summary(
        &self,
        event: &Event,
        summary: &EntitlementSummary,
        retry: &Retry,
    ) -> Result<Option<Event>, SettleError> {
        let (Some(api), Some(customer)) = (&self.api, summary.customer.as_deref()) else {
            tracing::warn!(
                event_id = %event.id,
                listed = summary.features.len(),
                "entitlement summary incomplete (has_more) and no STRIPE_SECRET_KEY to read the rest: applying the listed features"
            );
            return Ok(None);
        };
        let features = api
            .active_entitlements(customer, event.account.as_deref(), retry)
            .await?;
        Ok(Some(Event {
            action: Action::Entitlements(EntitlementSummary {
                features,
                has_more: false,
                ..summary.clone()
            }),
            ..event.clone()
        }))
    }

    /// The subscription as the API has it now; `None` when the API does not
    /// know it (then the payload is applied as it is).
    async fn fetch(
        &self,
        api: &StripeApi,
        event: &Event,
        id: &str,
        retry: &Retry,
    ) -> Result<Option<SubscriptionUpdate>, SettleError> {
        let body = match api.subscription(id, event.account.as_deref(), retry).await {
            Ok(body) => body,
            Err(StripeApiError::NotFound(what)) => {
                tracing::warn!(event_id = %event.id, event_type = %event.kind, "{what}; applying the event's payload as it is");
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        let truth = event::parse_subscription(&body, &self.username_key)
            .map_err(|error| StripeApiError::BadAnswer(error.to_string()))?;
        if truth.subscription != id {
            return Err(StripeApiError::BadAnswer(format!(
                "asked for subscription {id}, got {}",
                truth.subscription
            ))
            .into());
        }
        tracing::debug!(event_id = %event.id, subscription = id, status = %truth.status, "subscription read from Stripe's API");
        Ok(Some(truth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Checkout, InvoiceNote};

    fn event(created: i64, action: Action) -> Event {
        Event {
            id: "evt_1".into(),
            kind: "x".into(),
            created,
            livemode: None,
            account: None,
            action,
        }
    }

    fn update(status: &str) -> Action {
        Action::Subscription(SubscriptionUpdate {
            subscription: "sub_1".into(),
            customer: Some("cus_1".into()),
            username: None,
            status: status.into(),
            current_period_end: None,
            details: Default::default(),
        })
    }

    fn invoice(subscription: Option<&str>) -> Action {
        Action::Invoice(InvoiceNote {
            customer: Some("cus_1".into()),
            subscription: subscription.map(str::to_owned),
            username: None,
        })
    }

    fn recorded(seen: bool, state_created: Option<i64>) -> Recorded {
        Recorded {
            seen,
            state_created,
            state_event: state_created.map(|created| format!("evt_{created}")),
        }
    }

    #[test]
    fn invoices_of_a_subscription_fetch_it() {
        let paid = event(100, invoice(Some("sub_1")));
        assert_eq!(candidate(&paid), Some("sub_1"));
        assert_eq!(
            decide(&paid, &recorded(false, None)),
            Settlement::Fetch("sub_1".into())
        );
        assert_eq!(
            decide(&paid, &recorded(false, Some(50))),
            Settlement::Fetch("sub_1".into())
        );
        let one_off = event(100, invoice(None));
        assert_eq!(candidate(&one_off), None);
        assert_eq!(
            decide(&one_off, &recorded(false, None)),
            Settlement::Payload
        );
    }

    #[test]
    fn only_a_tie_makes_a_subscription_event_fetch() {
        let updated = event(100, update("active"));
        assert_eq!(
            decide(&updated, &recorded(false, Some(100))),
            Settlement::Fetch("sub_1".into())
        );
        for state_created in [None, Some(99), Some(101)] {
            assert_eq!(
                decide(&updated, &recorded(false, state_created)),
                Settlement::Payload,
                "{state_created:?}"
            );
        }
    }

    #[test]
    fn a_duplicate_never_fetches() {
        assert_eq!(
            decide(&event(100, update("active")), &recorded(true, Some(100))),
            Settlement::Payload
        );
        assert_eq!(
            decide(&event(100, invoice(Some("sub_1"))), &recorded(true, None)),
            Settlement::Payload
        );
    }

    #[test]
    fn checkouts_and_other_types_never_need_the_api() {
        let checkout = event(
            100,
            Action::Checkout(Checkout {
                session_id: "cs_1".into(),
                username: Some("ann".into()),
                customer: Some("cus_1".into()),
                subscription: Some("sub_1".into()),
                paid: true,
            }),
        );
        assert_eq!(candidate(&checkout), None);
        assert_eq!(candidate(&event(100, Action::Unhandled)), None);
    }
}
