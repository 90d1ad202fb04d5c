//! `checkout.session.*`: who paid, for which customer and subscription.

use serde::Deserialize;

use super::{Metadata, Reference, id_of, username_in};

/// `checkout.session.completed` and its `async_payment_*` sequels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub session_id: String,
    pub username: Option<String>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    /// `payment_status` is `paid` or `no_payment_required` (always for
    /// `async_payment_succeeded`, never for `async_payment_failed`).
    pub paid: bool,
}

#[derive(Deserialize)]
pub(super) struct RawCheckout {
    id: String,
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    customer: Option<Reference>,
    subscription: Option<Reference>,
    payment_status: Option<String>,
}

pub(super) fn checkout(raw: RawCheckout, kind: &str, username_key: &str) -> Checkout {
    Checkout {
        session_id: raw.id,
        username: raw
            .client_reference_id
            .filter(|id| !id.is_empty())
            .or_else(|| username_in(&raw.metadata, username_key)),
        customer: id_of(raw.customer),
        subscription: id_of(raw.subscription),
        paid: match kind {
            "checkout.session.async_payment_succeeded" => true,
            "checkout.session.async_payment_failed" => false,
            _ => matches!(
                raw.payment_status.as_deref(),
                Some("paid" | "no_payment_required")
            ),
        },
    }
}
