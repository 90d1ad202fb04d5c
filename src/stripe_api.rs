//! Stripe's API, through async-stripe's client: the reads the worker makes,
//! `GET /v1/events`, `GET /v1/subscriptions/{id}` and
//! `GET /v1/entitlements/active_entitlements`, each retried with backoff
//! inside a time budget, for a connected account when an event names one.
//!
//! Answers are kept as raw JSON and read by our own tolerant types, not by
//! async-stripe's generated ones:
//! - a listed event keeps the API version it was rendered with when it
//!   happened (a newer `Stripe-Version` header does not re-render it), so the
//!   generated event types, strict and pinned to `2026-09-30.endive`, would
//!   refuse every older one; `event::parse` reads them like webhook bodies;
//! - of a subscription we need four fields, and `event::parse_subscription`
//!   reads them the way a webhook payload's are read (status, customer,
//!   metadata, period end on the items). The generated `Subscription`
//!   requires 20 fields at the top and more in every item and price, and its
//!   parse errors name no field.

mod errors;
mod http;
mod retry;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use stripe_client_core::{AccountId, RequestBuilder, StripeClient, StripeMethod};

use crate::config::{ConfigError, StripeApiConfig};
use crate::stats;
use http::{Http, HttpError};

use errors::Failure;
pub use errors::StripeApiError;
pub use http::MAX_ANSWER_BYTES;
pub use retry::{RATE_LIMIT_PAUSE, Retry};

mod operator;
pub use operator::KeyProbe;

/// Stripe's largest page.
const PAGE_SIZE: u8 = 100;

/// A client for Stripe's API; cheap to clone. Its `Debug` never shows the
/// key (the header is marked sensitive).
#[derive(Clone, Debug)]
pub struct StripeApi {
    http: Http,
}

/// One page of `GET /v1/events`, newest first; each event as raw JSON.
#[derive(Debug, Deserialize)]
pub struct EventsPage {
    pub has_more: bool,
    pub data: Vec<Box<RawValue>>,
}

/// The query of `GET /v1/events`: `limit=100&created[gte]=..&types[0]=..`
/// and, after the first page, `starting_after=<last id>`.
#[derive(Serialize)]
struct EventsQuery<'a> {
    limit: u8,
    created: CreatedSince,
    types: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    starting_after: Option<&'a str>,
}

#[derive(Serialize)]
struct CreatedSince {
    gte: i64,
}

/// The query of `GET /v1/entitlements/active_entitlements`.
#[derive(Serialize)]
struct EntitlementsQuery<'a> {
    customer: &'a str,
    limit: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    starting_after: Option<&'a str>,
}

#[derive(Deserialize)]
struct EntitlementsPage {
    has_more: bool,
    data: Vec<ListedEntitlement>,
}

#[derive(Deserialize)]
struct ListedEntitlement {
    id: String,
    lookup_key: Option<String>,
}

impl StripeApi {
    /// The client for `config`; `None` when no key is set.
    pub fn from_config(config: &StripeApiConfig) -> Result<Option<Self>, ConfigError> {
        let Some(key) = &config.secret_key else {
            return Ok(None);
        };
        let user_agent = concat!("session-worker/", env!("CARGO_PKG_VERSION"));
        let http = Http::new(key.expose_secret(), &config.api_base, user_agent).ok_or(
            // The error names the setting's problem, not its value.
            ConfigError {
                variable: "STRIPE_SECRET_KEY",
                problem: "is not usable in an HTTP header".into(),
            },
        )?;
        if format!("{}v1/events", config.api_base)
            .parse::<axum::http::Uri>()
            .is_err()
        {
            return Err(ConfigError {
                variable: "STRIPE_API_BASE",
                problem: "is not a usable URL".into(),
            });
        }
        Ok(Some(Self { http }))
    }

    /// `GET /v1/subscriptions/{id}`: the subscription as the API has it now;
    /// `account`: of that connected account (Connect's `Stripe-Account`).
    pub async fn subscription(
        &self,
        id: &str,
        account: Option<&str>,
        retry: &Retry,
    ) -> Result<Bytes, StripeApiError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StripeApiError::NotFound(format!(
                "subscription {id:?} (not an id)"
            )));
        }
        let path = format!("/subscriptions/{id}");
        self.get("subscription", account, retry, || {
            RequestBuilder::new(StripeMethod::Get, path.as_str())
        })
        .await
        .map_err(|error| match error {
            StripeApiError::NotFound(_) => StripeApiError::NotFound(format!("subscription {id}")),
            other => other,
        })
    }

    /// One page of `GET /v1/events`: events of `types` created at
    /// `created_gte` or later, newest first, after `starting_after`.
    pub async fn events_page(
        &self,
        types: &[&str],
        created_gte: i64,
        starting_after: Option<&str>,
        retry: &Retry,
    ) -> Result<EventsPage, StripeApiError> {
        let query = EventsQuery {
            limit: PAGE_SIZE,
            created: CreatedSince { gte: created_gte },
            types,
            starting_after,
        };
        let body = self
            .get("events", None, retry, || {
                RequestBuilder::new(StripeMethod::Get, "/events").query(&query)
            })
            .await?;
        serde_json::from_slice(&body)
            .map_err(|error| StripeApiError::BadAnswer(format!("events list: {error}")))
    }

    /// Every page of `GET /v1/entitlements/active_entitlements` of
    /// `customer`: the lookup keys of its active features. `retry` applies
    /// to each page.
    pub async fn active_entitlements(
        &self,
        customer: &str,
        account: Option<&str>,
        retry: &Retry,
    ) -> Result<Vec<String>, StripeApiError> {
        let mut features = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let query = EntitlementsQuery {
                customer,
                limit: PAGE_SIZE,
                starting_after: starting_after.as_deref(),
            };
            let body = self
                .get("active_entitlements", account, retry, || {
                    RequestBuilder::new(StripeMethod::Get, "/entitlements/active_entitlements")
                        .query(&query)
                })
                .await?;
            let page: EntitlementsPage = serde_json::from_slice(&body).map_err(|error| {
                StripeApiError::BadAnswer(format!("active entitlements list: {error}"))
            })?;
            let last = page.data.last().map(|entitlement| entitlement.id.clone());
            features.extend(
                page.data
                    .into_iter()
                    .filter_map(|entitlement| entitlement.lookup_key)
                    .filter(|key| !key.is_empty()),
            );
            match (page.has_more, last) {
                (true, Some(last)) => starting_after = Some(last),
                _ => return Ok(features),
            }
        }
    }

    /// Attempts of one GET until an answer, a lasting refusal, or the end of
    /// the attempts or the budget.
    async fn get(
        &self,
        call: &'static str,
        account: Option<&str>,
        retry: &Retry,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Bytes, StripeApiError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            let left = retry.budget.saturating_sub(started.elapsed());
            let result = self
                .attempt(request(), account, retry.attempt_timeout.min(left))
                .await;
            attempts += 1;
            let last = match result {
                Ok(body) => {
                    stats::stripe_api(call, "ok");
                    return Ok(body);
                }
                Err(error) => match Failure::of(error) {
                    Failure::Lasting(outcome, error) => {
                        stats::stripe_api(call, outcome);
                        return Err(error);
                    }
                    Failure::Transient(outcome, last, least_pause) => {
                        stats::stripe_api(call, outcome);
                        (last, least_pause)
                    }
                },
            };
            let (last, least_pause) = last;
            let pause = retry.backoff(attempts).max(least_pause);
            // Not worth an attempt: less than this would be left for it.
            let least = Duration::from_millis(50);
            let left = retry.budget.saturating_sub(started.elapsed());
            if attempts >= retry.attempts || left < pause + least {
                return Err(StripeApiError::Unavailable {
                    attempts,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
            tracing::warn!(
                call,
                attempt = attempts,
                retry_in_ms = pause.as_millis() as u64,
                "Stripe API call failed, retrying: {last}"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// One HTTP attempt, its raw body kept.
    async fn attempt(
        &self,
        request: RequestBuilder,
        account: Option<&str>,
        timeout: Duration,
    ) -> Result<Bytes, HttpError> {
        let keep = KeepBody {
            client: &self.http,
            body: Mutex::new(None),
        };
        let mut request = request.customize::<()>().timeout(timeout);
        if let Some(account) = account {
            request = request.account_id(AccountId::from(account));
        }
        request.send(&keep).await?;
        Ok(keep.body.into_inner().ok().flatten().unwrap_or_default())
    }
}

/// `customize().send(client)` reads the answer with miniserde into the
/// request's output type; we want the bytes (read by our own tolerant
/// types). So this client passes the call on, keeps the body, and hands
/// `send` a JSON `null` to read as `()`.
struct KeepBody<'a> {
    client: &'a Http,
    body: Mutex<Option<Bytes>>,
}

impl StripeClient for KeepBody<'_> {
    type Err = HttpError;

    async fn execute(
        &self,
        request: stripe_client_core::CustomizedStripeRequest,
    ) -> Result<Bytes, HttpError> {
        let body = self.client.execute(request).await?;
        if let Ok(mut kept) = self.body.lock() {
            *kept = Some(body);
        }
        Ok(Bytes::from_static(b"null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_query_uses_stripes_brackets() {
        let query = EventsQuery {
            limit: 100,
            created: CreatedSince { gte: 1_700_000_000 },
            types: &["invoice.paid", "customer.subscription.updated"],
            starting_after: Some("evt_9"),
        };
        let encoded = RequestBuilder::new(StripeMethod::Get, "/events")
            .query(&query)
            .query
            .unwrap();
        let decoded = encoded.replace("%5B", "[").replace("%5D", "]");
        assert_eq!(
            decoded,
            "limit=100&created[gte]=1700000000&types[0]=invoice.paid\
             &types[1]=customer.subscription.updated&starting_after=evt_9"
        );
    }
}
