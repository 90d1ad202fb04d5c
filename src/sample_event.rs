//! Realistic Stripe events for `session-worker trigger`, the offline
//! stand-in for `stripe trigger`: the envelope and objects as Stripe renders
//! them at [`API_VERSION`] (the version async-stripe pins; a subscription's
//! period end on its items, an invoice's subscription under
//! `parent.subscription_details`), in test mode.

use std::hash::{BuildHasher, Hasher};

use serde_json::{Value, json};

/// The API version the events are shaped like.
pub const API_VERSION: &str = "2026-09-30.endive";

/// The types `trigger` builds.
pub const TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
];

/// Thirty days, a monthly period.
const PERIOD: i64 = 30 * 24 * 3600;

/// Who and what an event is about.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The web app's username: `client_reference_id` of a checkout and
    /// `metadata.username` of a subscription.
    pub user: Option<String>,
    pub customer: String,
    pub subscription: String,
    /// A subscription's status, or a checkout's `payment_status`; `None`
    /// for the type's usual one.
    pub status: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Live mode (`"livemode": true` on the event and its objects), for a
    /// deployment with `STRIPE_MODE=live`; test mode by default, as
    /// `stripe trigger` sends.
    pub livemode: bool,
}

impl Subject {
    /// Ids derived from the user, so that a checkout and the subscription
    /// events triggered after it for the same user name the same customer
    /// and subscription; random without a user.
    pub fn new(user: Option<String>, created: i64) -> Self {
        let seed = match &user {
            Some(user) => fnv1a(user.as_bytes()),
            None => random_u64(),
        };
        Self {
            customer: format!("cus_T{}", base62(seed, 13)),
            subscription: format!("sub_1T{}", base62(seed.rotate_left(17), 22)),
            user,
            status: None,
            created,
            livemode: false,
        }
    }
}

/// The event of `kind` about `subject`, or `None` for a type it cannot build.
pub fn build(kind: &str, subject: &Subject) -> Option<Value> {
    let (object, previous) = match kind {
        "checkout.session.completed" => (checkout(subject, "paid"), None),
        "checkout.session.async_payment_succeeded" => (checkout(subject, "paid"), None),
        "checkout.session.async_payment_failed" => (checkout(subject, "unpaid"), None),
        "customer.subscription.created" => (subscription(subject, "active"), None),
        "customer.subscription.updated" => {
            let object = subscription(subject, "active");
            let before = if object["status"] == "past_due" {
                "active"
            } else {
                "past_due"
            };
            (object, Some(json!({ "status": before })))
        }
        "customer.subscription.deleted" => (subscription(subject, "canceled"), None),
        "customer.subscription.paused" => (subscription(subject, "paused"), None),
        "customer.subscription.resumed" => (subscription(subject, "active"), None),
        "customer.subscription.trial_will_end" => (subscription(subject, "trialing"), None),
        "invoice.paid" => (invoice(subject, true), None),
        "invoice.payment_failed" => (invoice(subject, false), None),
        _ => return None,
    };
    let mut data = json!({ "object": object });
    if let Some(previous) = previous {
        data["previous_attributes"] = previous;
    }
    Some(json!({
        "id": format!("evt_1T{}", base62(random_u64(), 22)),
        "object": "event",
        "api_version": API_VERSION,
        "created": subject.created,
        "data": data,
        "livemode": subject.livemode,
        "pending_webhooks": 1,
        "request": { "id": format!("req_{}", base62(random_u64(), 14)), "idempotency_key": null },
        "type": kind
    }))
}

fn metadata(subject: &Subject) -> Value {
    match &subject.user {
        Some(user) => json!({ "username": user }),
        None => json!({}),
    }
}

fn checkout(subject: &Subject, payment_status: &str) -> Value {
    let paid = subject.status.as_deref().unwrap_or(payment_status);
    let t = subject.created;
    json!({
        "id": format!("cs_test_a1{}", base62(random_u64(), 56)),
        "object": "checkout.session",
        "adaptive_pricing": { "enabled": false },
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": 1500,
        "amount_total": 1500,
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_address_collection": null,
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": subject.user,
        "client_secret": null,
        "collected_information": { "shipping_details": null },
        "consent": null,
        "consent_collection": null,
        "created": t - 60,
        "currency": "usd",
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
        "customer": subject.customer,
        "customer_creation": "always",
        "customer_details": { "address": null, "email": "customer@example.com", "name": null, "phone": null, "tax_exempt": "none", "tax_ids": [] },
        "customer_email": null,
        "discounts": [],
        "expires_at": t + 86_340,
        "invoice": format!("in_1T{}", base62(random_u64(), 22)),
        "invoice_creation": null,
        "livemode": subject.livemode,
        "locale": null,
        "metadata": metadata(subject),
        "mode": "subscription",
        "origin_context": null,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_configuration_details": null,
        "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
        "payment_method_types": ["card"],
        "payment_status": paid,
        "permissions": null,
        "phone_number_collection": { "enabled": false },
        "recovered_from": null,
        "saved_payment_method_options": { "allow_redisplay_filters": ["always"], "payment_method_remove": "disabled", "payment_method_save": null },
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "complete",
        "submit_type": null,
        "subscription": subject.subscription,
        "success_url": "https://example.com/success",
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted",
        "url": null,
        "wallet_options": null
    })
}

fn subscription(subject: &Subject, usual: &str) -> Value {
    let status = subject.status.as_deref().unwrap_or(usual);
    let t = subject.created;
    let start = t - 60;
    let ended = matches!(status, "canceled" | "incomplete_expired");
    let trialing = status == "trialing";
    json!({
        "id": subject.subscription,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": start,
        "billing_cycle_anchor_config": null,
        "billing_mode": { "type": "flexible", "flexible": { "proration_discounts": "included" }, "updated_at": start },
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": if ended { json!(t) } else { Value::Null },
        "cancellation_details": { "comment": null, "feedback": null, "reason": if ended { json!("cancellation_requested") } else { Value::Null } },
        "collection_method": "charge_automatically",
        "created": start,
        "currency": "usd",
        "customer": subject.customer,
        "customer_account": null,
        "days_until_due": null,
        "default_payment_method": format!("pm_1T{}", base62(random_u64(), 22)),
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": if ended { json!(t) } else { Value::Null },
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": {
            "object": "list",
            "data": [{
                "id": format!("si_T{}", base62(random_u64(), 14)),
                "object": "subscription_item",
                "billing_thresholds": null,
                "created": start,
                "current_period_end": start + PERIOD,
                "current_period_start": start,
                "discounts": [],
                "metadata": {},
                "price": {
                    "id": "price_1TsampleMonthly", "object": "price", "active": true,
                    "billing_scheme": "per_unit", "created": start - PERIOD, "currency": "usd",
                    "livemode": subject.livemode, "lookup_key": null, "metadata": {}, "nickname": null,
                    "product": "prod_TsamplePlan", "recurring": { "interval": "month", "interval_count": 1,
                    "meter": null, "usage_type": "licensed" }, "tax_behavior": "unspecified",
                    "type": "recurring", "unit_amount": 1500, "unit_amount_decimal": "1500"
                },
                "quantity": 1,
                "subscription": subject.subscription,
                "tax_rates": []
            }],
            "has_more": false,
            "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={}", subject.subscription)
        },
        "latest_invoice": format!("in_1T{}", base62(random_u64(), 22)),
        "livemode": subject.livemode,
        "metadata": metadata(subject),
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": start,
        "status": status,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": if trialing { json!(t + 3 * 24 * 3600) } else { Value::Null },
        "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
        "trial_start": if trialing { json!(start) } else { Value::Null }
    })
}

fn invoice(subject: &Subject, paid: bool) -> Value {
    let t = subject.created;
    let due = if paid { 0 } else { 1500 };
    json!({
        "id": format!("in_1T{}", base62(random_u64(), 22)),
        "object": "invoice",
        "account_country": "US",
        "amount_due": 1500,
        "amount_paid": 1500 - due,
        "amount_remaining": due,
        "attempt_count": 1,
        "attempted": true,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": t - 60,
        "currency": "usd",
        "customer": subject.customer,
        "livemode": subject.livemode,
        "metadata": {},
        "parent": {
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": { "metadata": metadata(subject), "subscription": subject.subscription }
        },
        "period_end": t - 60,
        "period_start": t - 60 - PERIOD,
        "status": if paid { "paid" } else { "open" },
        "status_transitions": { "finalized_at": t - 60, "paid_at": if paid { json!(t) } else { Value::Null } },
        "subtotal": 1500,
        "total": 1500
    })
}

/// Stable across runs and machines (std's hashers are seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Ids only need to be unique, not secret: std's per-process random hasher
/// keys, mixed with the clock and a counter.
fn random_u64() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish()
}

/// `len` characters of [0-9A-Za-z] drawn from `seed`.
fn base62(seed: u64, len: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut state = seed;
    (0..len)
        .map(|_| {
            // xorshift: more characters than one u64 holds in base 62.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            DIGITS[(state % 62) as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Action};

    #[test]
    fn livemode_is_the_subjects_on_the_event_and_its_objects() {
        for livemode in [false, true] {
            let subject = Subject {
                livemode,
                ..Subject::new(Some("ann".into()), 1_700_000_000)
            };
            for kind in TYPES {
                let event = build(kind, &subject).unwrap();
                let body = serde_json::to_vec(&event).unwrap();
                let parsed = event::parse(&body, "username").unwrap();
                assert_eq!(parsed.livemode, Some(livemode), "{kind}");
                assert_eq!(event["data"]["object"]["livemode"], livemode, "{kind}");
            }
        }
    }

    #[test]
    fn every_type_parses_as_the_webhook_reads_it() {
        let mut subject = Subject::new(Some("ann".into()), 1_700_000_000);
        for kind in TYPES {
            let event = build(kind, &subject).unwrap();
            let body = serde_json::to_vec(&event).unwrap();
            let parsed = event::parse(&body, "username").unwrap();
            assert_eq!(parsed.kind, *kind);
            assert_eq!(parsed.created, 1_700_000_000);
            match parsed.action {
                Action::Checkout(checkout) => {
                    assert_eq!(checkout.username.as_deref(), Some("ann"));
                    assert_eq!(
                        checkout.customer.as_deref(),
                        Some(subject.customer.as_str())
                    );
                    assert_eq!(checkout.paid, !kind.ends_with("failed"), "{kind}");
                }
                Action::Subscription(update) => {
                    assert_eq!(update.subscription, subject.subscription);
                    assert_eq!(update.username.as_deref(), Some("ann"));
                    assert!(update.current_period_end.is_some());
                }
                Action::Invoice(note) => {
                    assert_eq!(
                        note.subscription.as_deref(),
                        Some(subject.subscription.as_str())
                    );
                }
                Action::Unhandled => {}
                Action::Entitlements(_) => panic!("{kind}: trigger builds no entitlement summary"),
            }
        }
        subject.status = Some("past_due".into());
        let updated = build("customer.subscription.updated", &subject).unwrap();
        assert_eq!(updated["data"]["object"]["status"], "past_due");
        assert_eq!(updated["data"]["previous_attributes"]["status"], "active");
        assert!(build("charge.refunded", &subject).is_none());
    }

    #[test]
    fn the_same_user_gets_the_same_customer_and_subscription() {
        let one = Subject::new(Some("ann".into()), 1);
        let two = Subject::new(Some("ann".into()), 2);
        assert_eq!(
            (&one.customer, &one.subscription),
            (&two.customer, &two.subscription)
        );
        assert_ne!(one.customer, Subject::new(Some("bob".into()), 1).customer);
        assert!(one.customer.starts_with("cus_") && one.subscription.starts_with("sub_"));
        let a = build("invoice.paid", &one).unwrap();
        let b = build("invoice.paid", &one).unwrap();
        assert_ne!(a["id"], b["id"]);
    }
}
