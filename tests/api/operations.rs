//! Running it as a service: health, readiness, metrics, request ids.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::Request;
use sqlx::PgPool;
use tower::ServiceExt;

use crate::binary::{Server, database_url};
use crate::cable::{Cable, server_of};
use crate::helpers::*;

/// Started before its database is reachable, the service waits for it,
/// becomes ready, and rides out a later outage without a restart.
#[sqlx::test]
async fn serve_waits_for_the_database_and_survives_it_going_away(pool: PgPool) {
    add_session(&pool, "s", "uma", Some("{}"), 60, true).await;
    let mut cable = Cable::to(server_of(&pool)).await;
    cable.cut().await;
    let mut server = Server::start(&database_url(&pool, Some(cable.address.port())), &[]);

    server.wait_until("/healthz", 200).await;
    assert_eq!(server.get("/readyz").await.status(), 503);
    let event = checkout("evt_early", now(), "uma", "cus_u", Some("sub_u"));
    let (status, body) = server.deliver(&event).await;
    assert_eq!(status, 503, "{body}");

    cable.restore().await;
    server.wait_until("/readyz", 200).await;
    let (status, body) = server.deliver(&event).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(session(&pool, "s").await["subscribed"], true);

    cable.cut().await;
    server.wait_until("/readyz", 503).await;
    assert_eq!(server.get("/healthz").await.status(), 200);
    cable.restore().await;
    server.wait_until("/readyz", 200).await;
    let cancel = subscription(
        "evt_later",
        "deleted",
        now(),
        "sub_u",
        "cus_u",
        "canceled",
        None,
    );
    let (status, body) = server.deliver(&cancel).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(session(&pool, "s").await["subscribed"], false);

    server.terminate();
    assert_eq!(server.wait().await.code(), Some(0));
}

/// One Prometheus sample per series: `name{label="value",...}` -> value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        assert!(
            samples.insert(key, value).is_none(),
            "duplicate series in {line:?}"
        );
    }
    samples
}

#[sqlx::test]
async fn metrics_count_what_happened(pool: PgPool) {
    add_session(&pool, "s1", "vic", Some("{}"), 60, true).await;
    add_session(&pool, "s2", "vic", Some("not json"), 60, true).await;
    let mut server = Server::start(&database_url(&pool, None), &[]);
    server.wait_until("/readyz", 200).await;

    let event = checkout("evt_m", now(), "vic", "cus_v", Some("sub_v"));
    assert_eq!(server.deliver(&event).await.0, 200);
    assert_eq!(server.deliver(&event).await.0, 200);
    let unknown = event_of_type(
        "evt_other",
        "customer.created",
        serde_json::json!({ "id": "cus_v" }),
    );
    assert_eq!(server.deliver(&unknown).await.0, 200);
    let forged = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", server.base))
        .header(
            "stripe-signature",
            format!("t={},v1={}", now(), "0".repeat(64)),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);

    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = parse_prometheus(&response.text().await.unwrap());
    let value = |key: &str| {
        *metrics
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {metrics:#?}"))
    };
    let events = "session_worker_webhook_events_total";
    assert_eq!(
        value(&format!(
            "{events}{{outcome=\"applied\",type=\"checkout.session.completed\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "{events}{{outcome=\"duplicate\",type=\"checkout.session.completed\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "{events}{{outcome=\"ignored\",type=\"customer.created\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "{events}{{outcome=\"rejected\",type=\"unknown\"}}"
        )),
        1.0
    );
    assert_eq!(
        value("session_worker_signature_failures_total{reason=\"mismatch\"}"),
        1.0
    );
    assert_eq!(value("session_worker_sessions_updated_total"), 1.0);
    assert_eq!(value("session_worker_sessions_skipped_total"), 1.0);
    assert_eq!(value("session_worker_webhook_duration_seconds_count"), 4.0);
    assert_eq!(
        value("session_worker_webhook_duration_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    let applied_at = value("session_worker_last_event_applied_timestamp_seconds");
    assert!((applied_at - now() as f64).abs() < 60.0, "{applied_at}");

    server.terminate();
    assert_eq!(server.wait().await.code(), Some(0));
}

#[sqlx::test]
async fn request_ids_are_echoed_or_made(pool: PgPool) {
    let app = app(pool);
    let given = app
        .clone()
        .oneshot(
            Request::get("/healthz")
                .header("x-request-id", "req-abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-abc-123");
    let made = app
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
}

#[sqlx::test]
async fn readiness_needs_the_schema_and_the_database(pool: PgPool) {
    let ready = app(pool.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let mut state = crate::helpers::state(pool);
    state.schema = session_worker::http::SchemaReady::default();
    let not_migrated = session_worker::http::router(state)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(not_migrated.status(), 503);
}
