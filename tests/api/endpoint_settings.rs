//! The public endpoint's settings against the real binary: `METRICS_TOKEN`
//! and `STRIPE_MODE`.

use serde_json::Value;
use sqlx::PgPool;

use crate::binary::bare_command;
use crate::helpers::*;
use crate::hostile::{metric, ready_server};

#[sqlx::test]
async fn metrics_need_the_token_when_one_is_set(pool: PgPool) {
    let server = ready_server(&pool, &[("METRICS_TOKEN", "m3trics-t0ken")]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.base);
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer m3trics-t0ke"),
        Some("Basic m3trics-t0ken"),
        Some("bearer"),
    ] {
        let mut request = http.get(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let response = http
        .get(&url)
        .header("authorization", "Bearer m3trics-t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("session_worker_http_rejections_total{reason=\"metrics_unauthorized\"} 5"),
        "{text}"
    );
    assert!(!server.logs().join("\n").contains("m3trics-t0ken"));

    // Unset, /metrics stays open.
    let open = ready_server(&pool, &[]).await;
    assert_eq!(open.get("/metrics").await.status(), 200);
}

#[sqlx::test]
async fn events_of_the_other_mode_are_recorded_and_change_nothing(pool: PgPool) {
    add_session(
        &pool,
        "s_bob",
        "bob",
        Some("{\"theme\":\"dark\"}"),
        60,
        true,
    )
    .await;
    let before = raw_session(&pool, "s_bob").await;
    let server = ready_server(&pool, &[("STRIPE_MODE", "live")]).await;

    // The helpers' events are test-mode ones.
    let test_mode = checkout("evt_test_mode", now(), "bob", "cus_b", Some("sub_b"));
    for _ in 0..2 {
        let (status, body) = server.deliver(&test_mode).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some("wrong_mode"))
        );
    }
    let recorded: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT event_id, outcome FROM sw_events")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        [("evt_test_mode".to_owned(), Some("wrong_mode".to_owned()))]
    );
    assert_eq!(user_status(&pool, "bob").await, None);
    assert_eq!(raw_session(&pool, "s_bob").await, before);

    let mut live = checkout("evt_live", now(), "bob", "cus_b", Some("sub_b"));
    live["livemode"] = Value::Bool(true);
    let (status, body) = server.deliver(&live).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(session(&pool, "s_bob").await["subscribed"], true);
    assert!(
        metric(
            &server,
            "session_worker_webhook_events_total{type=\"checkout.session.completed\",outcome=\"wrong_mode\"}"
        )
        .await
            >= 2.0
    );
}

#[test]
fn an_api_key_of_the_other_mode_is_an_invalid_stripe_mode() {
    for (mode, key) in [("live", "sk_test_k3yvalue"), ("test", "rk_live_k3yvalue")] {
        let output = bare_command()
            .arg("serve")
            .env("DATABASE_URL", "postgres://u@localhost/db")
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("STRIPE_MODE", mode)
            .env("STRIPE_SECRET_KEY", key)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{mode}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("STRIPE_MODE"), "{stderr}");
        assert!(!stderr.contains("k3yvalue"), "{stderr}");
    }
}
