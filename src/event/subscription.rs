//! `customer.subscription.*`, and a subscription read from the API: its
//! state as of the event.

use serde::Deserialize;

use super::details::{self, Details};
use super::{EventError, Metadata, RawList, Reference, id_of, username_in};

/// `customer.subscription.*`: the subscription's state as of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub subscription: String,
    pub customer: Option<String>,
    pub username: Option<String>,
    pub status: String,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    pub details: Details,
}

#[derive(Deserialize)]
pub(super) struct RawSubscription {
    id: String,
    status: String,
    customer: Option<Reference>,
    #[serde(default)]
    metadata: Metadata,
    current_period_end: Option<i64>,
    items: Option<RawList<details::RawItem>>,
    #[serde(flatten)]
    details: details::RawDetails,
}

/// Parses a subscription object as the API returns it
/// (`GET /v1/subscriptions/{id}`), with the same tolerant reading as a
/// webhook's `data.object`.
pub fn parse_subscription(
    body: &[u8],
    username_key: &str,
) -> Result<SubscriptionUpdate, EventError> {
    let raw: RawSubscription = serde_json::from_slice(body).map_err(|e| EventError::BadObject {
        kind: "subscription".into(),
        reason: e.to_string(),
    })?;
    Ok(subscription(raw, "subscription", username_key))
}

pub(super) fn subscription(
    raw: RawSubscription,
    kind: &str,
    username_key: &str,
) -> SubscriptionUpdate {
    let items = raw.items.map(|items| items.data).unwrap_or_default();
    let item_period_end = items
        .iter()
        .filter_map(|item| item.current_period_end)
        .max();
    SubscriptionUpdate {
        subscription: raw.id,
        customer: id_of(raw.customer),
        username: username_in(&raw.metadata, username_key),
        // A deleted subscription is canceled, whatever the payload says.
        status: if kind == "customer.subscription.deleted" {
            "canceled".to_owned()
        } else {
            raw.status.to_ascii_lowercase()
        },
        current_period_end: raw.current_period_end.or(item_period_end),
        details: raw.details.details(items),
    }
}
