//! The reads the operator commands make: one event by id (`replay`), and
//! the newest event, which proves that a key works (`doctor`).

use bytes::Bytes;
use serde::Deserialize;
use stripe_client_core::{RequestBuilder, StripeMethod};

use super::{Retry, StripeApi, StripeApiError};

/// What `doctor` learns from one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProbe {
    /// `livemode` of the newest event the key can see; `None` when it sees
    /// none (a new account).
    pub newest_event_livemode: Option<bool>,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Livemode>,
}

#[derive(Deserialize)]
struct Livemode {
    livemode: bool,
}

impl StripeApi {
    /// `GET /v1/events/{id}`: the event as Stripe keeps it (30 days), raw.
    pub async fn event(&self, id: &str, retry: &Retry) -> Result<Bytes, StripeApiError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StripeApiError::NotFound(format!(
                "event {id:?} (not an id)"
            )));
        }
        let path = format!("/events/{id}");
        self.get("event", None, retry, || {
            RequestBuilder::new(StripeMethod::Get, path.as_str())
        })
        .await
        .map_err(|error| match error {
            StripeApiError::NotFound(_) => StripeApiError::NotFound(format!("event {id}")),
            other => other,
        })
    }

    /// `GET /v1/events?limit=1`: the cheapest call that needs the
    /// permission the worker needs (reading events).
    pub async fn probe(&self, retry: &Retry) -> Result<KeyProbe, StripeApiError> {
        let body = self
            .get("events", None, retry, || {
                RequestBuilder::new(StripeMethod::Get, "/events").query(&[("limit", "1")])
            })
            .await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|error| StripeApiError::BadAnswer(format!("events list: {error}")))?;
        Ok(KeyProbe {
            newest_event_livemode: page.data.first().map(|event| event.livemode),
        })
    }
}
