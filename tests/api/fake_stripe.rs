//! A local fake of the Stripe API endpoints the worker reads, with
//! Stripe's documented shapes: `GET /v1/events` (filters `types[]`,
//! `created[gte]`, pagination with `limit` and `starting_after`, newest
//! first), `GET /v1/events/{id}`, `GET /v1/subscriptions/{id}` and
//! `GET /v1/entitlements/active_entitlements`. It checks the key, counts
//! every request, and can answer 429 (with `Retry-After`), 500, slowly, or
//! only once the test lets it ([`FakeStripe::hold`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use session_worker::config::{Env, StripeApiConfig};
use session_worker::stripe_api::StripeApi;

pub const API_KEY: &str = "rk_test_fakeRestrictedKey";
/// The version async-stripe 1.0.0-rc.10 pins and sends.
pub const PINNED_VERSION: &str = "2026-09-30.endive";

/// How the fake answers a request instead of normally.
#[derive(Clone, Copy, Debug)]
pub enum Trouble {
    /// 429 with `Retry-After: 1`, as Stripe's rate limiter.
    RateLimited,
    /// 500 with Stripe's error body.
    ServerError,
    /// The normal answer, after this long.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub stripe_version: Option<String>,
    /// Connect's `Stripe-Account` header.
    pub stripe_account: Option<String>,
}

#[derive(Default)]
struct Data {
    /// In the order they happened (created, then insertion).
    events: Vec<Value>,
    subscriptions: HashMap<String, Value>,
    /// Active entitlements' lookup keys, by customer.
    entitlements: HashMap<String, Vec<String>>,
    requests: Vec<Seen>,
    /// Used up one per request, before `always`.
    next: VecDeque<Trouble>,
    always: Option<Trouble>,
    /// While true, answers wait (after the request is counted).
    held: Option<tokio::sync::watch::Receiver<bool>>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    data: Arc<Mutex<Data>>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FakeStripe {
    pub async fn start() -> Self {
        let (gate, held) = tokio::sync::watch::channel(false);
        let data = Arc::new(Mutex::new(Data {
            held: Some(held),
            ..Data::default()
        }));
        let app = Router::new()
            .route("/v1/events", get(list_events))
            .route("/v1/events/{id}", get(retrieve_event))
            .route("/v1/subscriptions/{id}", get(retrieve_subscription))
            .route(
                "/v1/entitlements/active_entitlements",
                get(list_active_entitlements),
            )
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            data,
            gate: Arc::new(gate),
        }
    }

    /// Every answer from now on waits (the request is counted first) until
    /// [`FakeStripe::release`]: a call the test knows to be in flight.
    pub fn hold(&self) {
        self.gate.send_replace(true);
    }

    pub fn release(&self) {
        self.gate.send_replace(false);
    }

    /// A client for this fake, as `serve` and `reconcile` build it.
    pub fn client(&self) -> StripeApi {
        let env = Env::from_pairs([
            ("STRIPE_SECRET_KEY", API_KEY),
            ("STRIPE_API_BASE", self.base.as_str()),
        ]);
        StripeApi::from_config(&StripeApiConfig::from_env(&env).unwrap())
            .unwrap()
            .unwrap()
    }

    /// Adds an event (a full Stripe event object) to the log.
    pub fn add_event(&self, event: Value) {
        self.data.lock().unwrap().events.push(event);
    }

    pub fn set_subscription(&self, subscription: Value) {
        let id = subscription["id"].as_str().unwrap().to_owned();
        self.data
            .lock()
            .unwrap()
            .subscriptions
            .insert(id, subscription);
    }

    /// The customer's active entitlements, by lookup key.
    pub fn set_entitlements(&self, customer: &str, lookup_keys: Vec<String>) {
        self.data
            .lock()
            .unwrap()
            .entitlements
            .insert(customer.to_owned(), lookup_keys);
    }

    /// The next requests meet these troubles, one each.
    pub fn trouble_next(&self, troubles: &[Trouble]) {
        self.data.lock().unwrap().next.extend(troubles);
    }

    /// Every request meets this trouble (None: none) once `trouble_next`'s
    /// are used up.
    pub fn trouble_always(&self, trouble: Option<Trouble>) {
        self.data.lock().unwrap().always = trouble;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.data.lock().unwrap().requests.clone()
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|seen| seen.path.starts_with(path_prefix))
            .count()
    }
}

type Shared = Arc<Mutex<Data>>;

/// Records the request, checks the key, and applies any trouble; `None`
/// means answer normally.
async fn intake(
    data: &Shared,
    headers: &HeaderMap,
    path: String,
    query: String,
) -> Option<Response> {
    let (trouble, held) = {
        let mut data = data.lock().unwrap();
        data.requests.push(Seen {
            path,
            query,
            stripe_version: headers
                .get("stripe-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            stripe_account: headers
                .get("stripe-account")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        (data.next.pop_front().or(data.always), data.held.clone())
    };
    if let Some(mut held) = held {
        // A closed gate (the fake dropped) lets everything through.
        let _ = held.wait_for(|held| !held).await;
    }
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_KEY}"));
    if !authorized {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided: rk_test_****",
        ));
    }
    match trouble {
        None => None,
        Some(Trouble::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Trouble::RateLimited) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
            );
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
            Some(response)
        }
        Some(Trouble::ServerError) => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "Something went wrong on Stripe's end.",
        )),
    }
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut body = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    (
        status,
        [("request-id", "req_fake")],
        axum::Json(json!({ "error": body })),
    )
        .into_response()
}

/// `types[]=a`, `types[0]=a` and `created[gte]=n` as Stripe reads them.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                s.replace("%5B", "[")
                    .replace("%5D", "]")
                    .replace("%2E", ".")
                    .replace("%5F", "_")
            };
            (decode(key), decode(value))
        })
        .collect()
}

async fn list_events(
    State(data): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    if let Some(response) = intake(&data, &headers, "/v1/events".into(), query.clone()).await {
        return response;
    }
    let pairs = query_pairs(&query);
    let types: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key.starts_with("types["))
        .map(|(_, value)| value.as_str())
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let created_gte: i64 = get("created[gte]").map_or(0, |v| v.parse().unwrap());
    let limit: usize = get("limit").map_or(10, |v| v.parse().unwrap());
    assert!((1..=100).contains(&limit), "limit={limit}");
    let starting_after = get("starting_after");

    let data = data.lock().unwrap();
    // Newest first; within one second, the later one first.
    let mut listed: Vec<&Value> = data
        .events
        .iter()
        .filter(|event| types.is_empty() || types.contains(&event["type"].as_str().unwrap()))
        .filter(|event| event["created"].as_i64().unwrap() >= created_gte)
        .collect();
    listed.reverse();
    listed.sort_by_key(|event| std::cmp::Reverse(event["created"].as_i64().unwrap()));
    let start = match starting_after {
        None => 0,
        Some(after) => {
            listed
                .iter()
                .position(|event| event["id"] == after.as_str())
                .expect("starting_after names a listed event")
                + 1
        }
    };
    let page: Vec<&Value> = listed.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < listed.len();
    axum::Json(json!({
        "object": "list",
        "url": "/v1/events",
        "has_more": has_more,
        "data": page,
    }))
    .into_response()
}

async fn retrieve_event(
    State(data): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = intake(&data, &headers, format!("/v1/events/{id}"), String::new()).await
    {
        return response;
    }
    let data = data.lock().unwrap();
    match data.events.iter().find(|event| event["id"] == id.as_str()) {
        Some(event) => axum::Json(event.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such event: '{id}'"),
        ),
    }
}

async fn retrieve_subscription(
    State(data): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = intake(
        &data,
        &headers,
        format!("/v1/subscriptions/{id}"),
        String::new(),
    )
    .await
    {
        return response;
    }
    match data.lock().unwrap().subscriptions.get(&id) {
        Some(subscription) => axum::Json(subscription.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such subscription: '{id}'"),
        ),
    }
}

/// `GET /v1/entitlements/active_entitlements?customer=..&limit=..&starting_after=..`,
/// paged as Stripe pages lists (ids `ent_<n>`).
async fn list_active_entitlements(
    State(data): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let path = "/v1/entitlements/active_entitlements".to_owned();
    if let Some(response) = intake(&data, &headers, path, query.clone()).await {
        return response;
    }
    let pairs = query_pairs(&query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let customer = get("customer").expect("customer is required");
    let limit: usize = get("limit").map_or(10, |v| v.parse().unwrap());
    assert!((1..=100).contains(&limit), "limit={limit}");
    let start = get("starting_after").map_or(0, |after| {
        after.trim_start_matches("ent_").parse::<usize>().unwrap() + 1
    });
    let keys = data
        .lock()
        .unwrap()
        .entitlements
        .get(&customer)
        .cloned()
        .unwrap_or_default();
    let page: Vec<Value> = keys
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(n, key)| {
            json!({ "id": format!("ent_{n}"), "object": "entitlements.active_entitlement",
                    "feature": format!("feat_{n}"), "livemode": false, "lookup_key": key })
        })
        .collect();
    axum::Json(json!({
        "object": "list",
        "url": "/v1/entitlements/active_entitlements",
        "has_more": start + page.len() < keys.len(),
        "data": page,
    }))
    .into_response()
}

/// A subscription object as `GET /v1/subscriptions/{id}` renders it at
/// 2026-09-30.endive (the period end lives on the items since 2025-03-31).
pub fn subscription_object(
    id: &str,
    customer: &str,
    status: &str,
    username: Option<&str>,
    period_end: i64,
) -> Value {
    let metadata = match username {
        Some(name) => json!({ "username": name }),
        None => json!({}),
    };
    let items = json!({
        "object": "list",
        "data": [{
            "id": format!("si_{id}"),
            "object": "subscription_item",
            "billing_thresholds": null,
            "created": period_end - 2_592_000,
            "current_period_end": period_end,
            "current_period_start": period_end - 2_592_000,
            "discounts": [],
            "metadata": {},
            "price": { "id": "price_1", "object": "price", "active": true, "currency": "usd",
                       "product": "prod_1", "type": "recurring", "unit_amount": 1500,
                       "recurring": { "interval": "month", "interval_count": 1, "usage_type": "licensed" } },
            "quantity": 1,
            "subscription": id,
            "tax_rates": []
        }],
        "has_more": false,
        "url": format!("/v1/subscription_items?subscription={id}")
    });
    json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": period_end - 2_592_000,
        "billing_cycle_anchor_config": null,
        "billing_mode": { "type": "flexible", "flexible": { "proration_discounts": "included" }, "updated_at": period_end - 2_592_000 },
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        "collection_method": "charge_automatically",
        "created": period_end - 2_592_000,
        "currency": "usd",
        "customer": customer,
        "customer_account": null,
        "days_until_due": null,
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": items,
        "latest_invoice": "in_1",
        "livemode": false,
        "metadata": metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": period_end - 2_592_000,
        "status": status,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
        "trial_start": null
    })
}

/// An `invoice.paid` / `invoice.payment_failed` event of `subscription`, in
/// the shape of API versions since 2025-03-31 (`parent.subscription_details`).
pub fn invoice_event(
    id: &str,
    kind: &str,
    created: i64,
    subscription: &str,
    customer: &str,
) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-06-30.basil",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": format!("invoice.{kind}"),
        "data": { "object": {
            "id": format!("in_{id}"),
            "object": "invoice",
            "customer": customer,
            "status": if kind == "paid" { "paid" } else { "open" },
            "parent": { "type": "subscription_details", "quote_details": null,
                        "subscription_details": { "metadata": {}, "subscription": subscription } }
        } }
    })
}
