//! `invoice.paid` / `invoice.payment_failed`: whose invoice, for which
//! subscription.

use serde::Deserialize;

use super::{Metadata, Reference, id_of, username_in};

/// `invoice.paid` / `invoice.payment_failed`: carries no subscription status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceNote {
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub username: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawInvoice {
    customer: Option<Reference>,
    subscription: Option<Reference>,
    #[serde(default)]
    metadata: Metadata,
    subscription_details: Option<RawSubscriptionDetails>,
    parent: Option<RawInvoiceParent>,
}

#[derive(Deserialize)]
pub(super) struct RawInvoiceParent {
    subscription_details: Option<RawSubscriptionDetails>,
}

#[derive(Deserialize)]
struct RawSubscriptionDetails {
    subscription: Option<Reference>,
    #[serde(default)]
    metadata: Metadata,
}

pub(super) fn invoice(raw: RawInvoice, username_key: &str) -> InvoiceNote {
    let details = raw
        .subscription_details
        .or_else(|| raw.parent.and_then(|parent| parent.subscription_details));
    let (details_subscription, details_metadata) = match details {
        Some(details) => (id_of(details.subscription), details.metadata),
        None => (None, None),
    };
    InvoiceNote {
        customer: id_of(raw.customer),
        subscription: id_of(raw.subscription).or(details_subscription),
        username: username_in(&raw.metadata, username_key)
            .or_else(|| username_in(&details_metadata, username_key)),
    }
}
