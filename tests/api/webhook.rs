//! The HTTP contract of `POST /webhooks/stripe`: what is refused, and how.

use axum::http::StatusCode;
use serde_json::json;
use session_worker::signature::sign;
use sqlx::PgPool;

use crate::helpers::*;

async fn recorded_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sw_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn signature_problems_are_400_with_a_clear_json_error(pool: PgPool) {
    let app = app(pool.clone());
    let event = checkout("evt_sig", now(), "alice", "cus_1", Some("sub_1"));
    let body = serde_json::to_vec(&event).unwrap();
    let good = sign(SECRET, now(), &body);
    let digest = good.split_once(",v1=").unwrap().1.to_owned();

    let cases = [
        (None, "missing Stripe-Signature header"),
        (Some(format!("v1={digest}")), "no timestamp"),
        (Some(format!("t=yesterday,v1={digest}")), "not a number"),
        (Some(format!("t={}", now())), "no v1"),
        (
            Some(sign("whsec_wrong", now(), &body)),
            "no v1 signature matches",
        ),
        (Some(sign(SECRET, now() - 301, &body)), "tolerance"),
        (Some(sign(SECRET, now() + 301, &body)), "tolerance"),
    ];
    for (header, expected) in cases {
        let (status, answer) = post_raw(&app, body.clone(), header.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header:?}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
        assert!(
            !message.contains(SECRET) && !message.contains(&digest),
            "{message}"
        );
    }
    assert_eq!(recorded_events(&pool).await, 0);

    // The same body with a good signature goes through.
    let (status, _) = post_raw(&app, body, Some(good)).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn a_signed_body_must_not_be_changed(pool: PgPool) {
    let app = app(pool.clone());
    let body = serde_json::to_vec(&checkout("evt_x", now(), "alice", "cus_1", None)).unwrap();
    let signature = sign(SECRET, now(), &body);
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'a').unwrap();
    tampered[at] = b'b';
    let (status, _) = post_raw(&app, tampered, Some(signature)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(recorded_events(&pool).await, 0);
}

#[sqlx::test]
async fn bodies_over_one_mebibyte_are_413(pool: PgPool) {
    let app = app(pool.clone());
    let mut big = json!({ "id": "evt_big", "type": "customer.created", "created": now(), "data": { "object": {} } });
    big["padding"] = json!("x".repeat(1024 * 1024));
    let body = serde_json::to_vec(&big).unwrap();
    let signature = sign(SECRET, now(), &body);
    let (status, answer) = post_raw(&app, body, Some(signature)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer["error"].as_str().unwrap().contains("1 MiB"));
    assert_eq!(recorded_events(&pool).await, 0);
}

#[sqlx::test]
async fn a_signed_body_that_is_not_an_event_is_400_and_records_nothing(pool: PgPool) {
    let app = app(pool.clone());
    for body in [
        b"{\"id\": \"evt_1\", broken".to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"{\"object\": \"event\"}".to_vec(),
        serde_json::to_vec(&event_of_type(
            "evt_2",
            "customer.subscription.updated",
            json!({ "id": "sub_1" }),
        ))
        .unwrap(),
    ] {
        let signature = sign(SECRET, now(), &body);
        let (status, answer) = post_raw(&app, body, Some(signature)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("event"),
            "{answer}"
        );
    }
    assert_eq!(recorded_events(&pool).await, 0);
}

#[sqlx::test]
async fn unknown_types_are_recorded_and_acknowledged(pool: PgPool) {
    let app = app(pool.clone());
    let event = event_of_type(
        "evt_unknown",
        "customer.created",
        json!({ "id": "cus_1", "object": "customer" }),
    );
    assert_eq!(outcome(&app, &event).await, "ignored");
    let (kind, outcome_text): (String, String) =
        sqlx::query_as("SELECT event_type, outcome FROM sw_events WHERE event_id = 'evt_unknown'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), outcome_text.as_str()),
        ("customer.created", "ignored")
    );
    assert_eq!(crate::helpers::outcome(&app, &event).await, "duplicate");
}

#[sqlx::test]
async fn an_event_without_a_user_is_recorded_and_acknowledged(pool: PgPool) {
    let app = app(pool.clone());
    let event = subscription(
        "evt_nobody",
        "updated",
        now(),
        "sub_9",
        "cus_unknown",
        "active",
        None,
    );
    assert_eq!(outcome(&app, &event).await, "unknown_user");
    let recorded: String =
        sqlx::query_scalar("SELECT outcome FROM sw_events WHERE event_id = 'evt_nobody'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, "unknown_user");
}

#[sqlx::test]
async fn invoices_are_recorded_with_their_user(pool: PgPool) {
    let app = app(pool.clone());
    assert_eq!(
        outcome(
            &app,
            &checkout("evt_c", now() - 5, "erin", "cus_e", Some("sub_e"))
        )
        .await,
        "applied"
    );
    let invoice = event_of_type(
        "evt_inv",
        "invoice.payment_failed",
        json!({ "id": "in_1", "object": "invoice", "customer": "cus_e", "subscription": "sub_e" }),
    );
    assert_eq!(outcome(&app, &invoice).await, "ignored");
    let username: Option<String> =
        sqlx::query_scalar("SELECT username FROM sw_events WHERE event_id = 'evt_inv'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(username.as_deref(), Some("erin"));
    // Without an API key an invoice changes no status.
    assert_eq!(
        user_status(&pool, "erin").await,
        Some((true, Some("active".into())))
    );
}
