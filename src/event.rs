//! A verified Stripe event body -> the change it asks of us.
//!
//! Only the fields we need are read, and every one of them may be missing or
//! in another place depending on the endpoint's API version: Stripe adds
//! fields all the time and moves some (`current_period_end` onto subscription
//! items, an invoice's subscription under `parent.subscription_details`).

mod checkout;
mod details;
mod entitlements;
mod invoice;
mod subscription;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

pub use checkout::Checkout;
pub use details::{Details, Item};
pub use entitlements::EntitlementSummary;
pub use invoice::InvoiceNote;
pub use subscription::{SubscriptionUpdate, parse_subscription};

/// Why a body is not a Stripe event we can act on.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(String),
    #[error("{kind} event has no usable data.object: {reason}")]
    BadObject { kind: String, reason: String },
}

/// One Stripe event, reduced to what the store needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    /// Unix seconds; Stripe's resolution is one second, so ties happen.
    pub created: i64,
    /// `livemode`: `None` when the body does not say (checked against
    /// `STRIPE_MODE`).
    pub livemode: Option<bool>,
    /// The connected account the event happened on (Connect); API reads
    /// for it go with its `Stripe-Account` header.
    pub account: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Checkout(Checkout),
    Subscription(SubscriptionUpdate),
    Invoice(InvoiceNote),
    Entitlements(EntitlementSummary),
    /// A type we do not act on: recorded and acknowledged.
    Unhandled,
}

/// Every `customer.subscription.*` type whose object is a subscription.
pub const SUBSCRIPTION_EVENTS: &[&str] = &[
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
];

pub const CHECKOUT_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
];

pub const ENTITLEMENTS_EVENT: &str = "entitlements.active_entitlement_summary.updated";

/// Every type the worker acts on (the types a Stripe endpoint should send
/// it, and the `types[]` that `reconcile` asks the Events API for).
pub const HANDLED_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "invoice.paid",
    "invoice.payment_failed",
    ENTITLEMENTS_EVENT,
];

#[derive(Deserialize)]
struct RawEvent<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    #[serde(default)]
    livemode: Option<bool>,
    account: Option<String>,
    #[serde(borrow)]
    data: RawData<'a>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    object: &'a RawValue,
}

/// A reference to another Stripe object: an id, or the object itself when
/// the endpoint expands it.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Reference {
    Id(String),
    Expanded { id: String },
}

pub(crate) fn id_of(reference: Option<Reference>) -> Option<String> {
    match reference? {
        Reference::Id(id) | Reference::Expanded { id } => Some(id).filter(|id| !id.is_empty()),
    }
}

pub(crate) type Metadata = Option<HashMap<String, Option<String>>>;

pub(crate) fn username_in(metadata: &Metadata, key: &str) -> Option<String> {
    metadata
        .as_ref()?
        .get(key)?
        .as_deref()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}
#[derive(Deserialize)]
pub(crate) struct RawList<T> {
    #[serde(default = "Vec::new")]
    pub(crate) data: Vec<T>,
    #[serde(default)]
    pub(crate) has_more: bool,
}
/// Parses a (verified) webhook body. `username_key` is the metadata key that
/// names the user.
pub fn parse(body: &[u8], username_key: &str) -> Result<Event, EventError> {
    let raw: RawEvent =
        serde_json::from_slice(body).map_err(|e| EventError::NotAnEvent(e.to_string()))?;
    if raw.id.is_empty() || raw.kind.is_empty() {
        return Err(EventError::NotAnEvent("empty id or type".into()));
    }
    let object = raw.data.object.get();
    let bad_object = |e: serde_json::Error| EventError::BadObject {
        kind: raw.kind.clone(),
        reason: e.to_string(),
    };
    let action = match raw.kind.as_str() {
        kind if CHECKOUT_EVENTS.contains(&kind) => Action::Checkout(checkout::checkout(
            serde_json::from_str(object).map_err(bad_object)?,
            kind,
            username_key,
        )),
        kind if SUBSCRIPTION_EVENTS.contains(&kind) => {
            Action::Subscription(subscription::subscription(
                serde_json::from_str(object).map_err(bad_object)?,
                kind,
                username_key,
            ))
        }
        "invoice.paid" | "invoice.payment_failed" => Action::Invoice(invoice::invoice(
            serde_json::from_str(object).map_err(bad_object)?,
            username_key,
        )),
        ENTITLEMENTS_EVENT => Action::Entitlements(
            serde_json::from_str::<entitlements::RawSummary>(object)
                .map_err(bad_object)?
                .summary(),
        ),
        _ => Action::Unhandled,
    };
    Ok(Event {
        id: raw.id,
        kind: raw.kind,
        created: raw.created,
        livemode: raw.livemode,
        account: raw.account.filter(|account| !account.is_empty()),
        action,
    })
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, object: serde_json::Value) -> Vec<u8> {
        json!({
            "id": "evt_1", "object": "event", "api_version": "2020-08-27",
            "created": 1_700_000_000, "livemode": false, "pending_webhooks": 1,
            "type": kind, "data": { "object": object, "previous_attributes": {} },
            "request": { "id": null, "idempotency_key": null }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn checkout_prefers_client_reference_id() {
        let body = event(
            "checkout.session.completed",
            json!({ "id": "cs_1", "object": "checkout.session", "client_reference_id": "alice",
                    "metadata": { "username": "bob" }, "customer": "cus_1",
                    "subscription": "sub_1", "payment_status": "paid", "mode": "subscription" }),
        );
        let parsed = parse(&body, "username").unwrap();
        assert_eq!(parsed.id, "evt_1");
        assert_eq!(parsed.created, 1_700_000_000);
        assert_eq!(parsed.livemode, Some(false));
        assert_eq!(
            parsed.action,
            Action::Checkout(Checkout {
                session_id: "cs_1".into(),
                username: Some("alice".into()),
                customer: Some("cus_1".into()),
                subscription: Some("sub_1".into()),
                paid: true,
            })
        );
    }

    #[test]
    fn checkout_falls_back_to_the_configured_metadata_key() {
        let body = event(
            "checkout.session.completed",
            json!({ "id": "cs_1", "client_reference_id": null, "metadata": { "user": "Bob" },
                    "customer": { "id": "cus_9", "object": "customer" },
                    "payment_status": "unpaid" }),
        );
        let Action::Checkout(checkout) = parse(&body, "user").unwrap().action else {
            panic!("not a checkout");
        };
        assert_eq!(checkout.username.as_deref(), Some("Bob"));
        assert_eq!(checkout.customer.as_deref(), Some("cus_9"));
        assert_eq!(checkout.subscription, None);
        assert!(!checkout.paid);
    }

    #[test]
    fn a_checkout_that_needs_no_payment_counts_as_paid() {
        for (payment_status, paid) in [
            ("no_payment_required", true),
            ("unpaid", false),
            ("paid", true),
        ] {
            let body = event(
                "checkout.session.completed",
                json!({ "id": "cs_1", "client_reference_id": "ann", "payment_status": payment_status }),
            );
            let Action::Checkout(checkout) = parse(&body, "username").unwrap().action else {
                panic!("not a checkout");
            };
            assert_eq!(checkout.paid, paid, "{payment_status}");
        }
    }

    #[test]
    fn subscription_period_end_may_live_on_items() {
        let body = event(
            "customer.subscription.updated",
            json!({ "id": "sub_1", "status": "past_due", "customer": "cus_1", "metadata": {},
                    "items": { "object": "list", "data": [
                        { "id": "si_1", "current_period_end": 1_700_000_100 },
                        { "id": "si_2", "current_period_end": 1_700_000_200 } ] } }),
        );
        let Action::Subscription(update) = parse(&body, "username").unwrap().action else {
            panic!("not a subscription");
        };
        assert_eq!(update.status, "past_due");
        assert_eq!(update.username, None);
        assert_eq!(update.current_period_end, Some(1_700_000_200));
    }

    #[test]
    fn async_payments_settle_a_checkout_either_way() {
        for (kind, paid) in [
            ("checkout.session.async_payment_succeeded", true),
            ("checkout.session.async_payment_failed", false),
        ] {
            let body = event(
                kind,
                json!({ "id": "cs_1", "client_reference_id": "ann", "payment_status": "unpaid" }),
            );
            let Action::Checkout(checkout) = parse(&body, "username").unwrap().action else {
                panic!("not a checkout");
            };
            assert_eq!(checkout.paid, paid, "{kind}");
        }
    }

    #[test]
    fn deleted_means_canceled() {
        let body = event(
            "customer.subscription.deleted",
            json!({ "id": "sub_1", "status": "active", "customer": "cus_1",
                    "current_period_end": 5, "metadata": { "username": "carol" } }),
        );
        let Action::Subscription(update) = parse(&body, "username").unwrap().action else {
            panic!("not a subscription");
        };
        assert_eq!(update.status, "canceled");
        assert_eq!(update.username.as_deref(), Some("carol"));
        assert_eq!(update.current_period_end, Some(5));
    }

    #[test]
    fn invoice_reads_old_and_new_api_shapes() {
        let old = event(
            "invoice.paid",
            json!({ "id": "in_1", "customer": "cus_1", "subscription": "sub_1",
                    "subscription_details": { "metadata": { "username": "dan" } } }),
        );
        let new = event(
            "invoice.payment_failed",
            json!({ "id": "in_1", "customer": "cus_1",
                    "parent": { "type": "subscription_details", "subscription_details": {
                        "subscription": "sub_1", "metadata": { "username": "dan" } } } }),
        );
        for body in [old, new] {
            assert_eq!(
                parse(&body, "username").unwrap().action,
                Action::Invoice(InvoiceNote {
                    customer: Some("cus_1".into()),
                    subscription: Some("sub_1".into()),
                    username: Some("dan".into()),
                })
            );
        }
    }

    #[test]
    fn every_handled_type_is_acted_on() {
        for kind in HANDLED_EVENTS {
            let object = json!({ "id": "x_1", "status": "active", "payment_status": "paid" });
            let action = parse(&event(kind, object), "username").unwrap().action;
            assert_ne!(action, Action::Unhandled, "{kind}");
        }
    }

    #[test]
    fn a_subscription_from_the_api_reads_like_a_payload() {
        let body = json!({ "id": "sub_1", "object": "subscription", "status": "Past_Due",
                           "customer": { "id": "cus_1", "object": "customer" },
                           "metadata": { "username": "erin" },
                           "items": { "object": "list", "data": [ { "current_period_end": 7 } ] } });
        let update = parse_subscription(body.to_string().as_bytes(), "username").unwrap();
        assert_eq!(
            update,
            SubscriptionUpdate {
                subscription: "sub_1".into(),
                customer: Some("cus_1".into()),
                username: Some("erin".into()),
                status: "past_due".into(),
                current_period_end: Some(7),
                details: Details {
                    items: vec![Item::default()],
                    ..Details::default()
                },
            }
        );
        assert!(matches!(
            parse_subscription(b"{\"id\":\"sub_1\"}", "username"),
            Err(EventError::BadObject { .. })
        ));
    }

    #[test]
    fn unknown_types_parse_without_looking_at_the_object() {
        let body = event("customer.created", json!("anything at all"));
        assert_eq!(parse(&body, "username").unwrap().action, Action::Unhandled);
    }

    #[test]
    fn bodies_that_are_not_events_are_refused() {
        assert!(matches!(
            parse(b"not json", "username"),
            Err(EventError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse(b"{\"id\":\"evt_1\"}", "username"),
            Err(EventError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse(b"[1,2]", "username"),
            Err(EventError::NotAnEvent(_))
        ));
        let no_status = event("customer.subscription.updated", json!({ "id": "sub_1" }));
        assert!(matches!(
            parse(&no_status, "username"),
            Err(EventError::BadObject { .. })
        ));
    }
}
