//! Stripe's API as the contract's "Faults" section has it: a `429` tried
//! again no sooner than its `Retry-After` and never sooner than 1 s; an
//! answer over 16 MiB refused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_worker::config::{Env, StripeApiConfig};
use session_worker::stripe_api::{Retry, StripeApi, StripeApiError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a canned server answers: one response per request, in order (the
/// last one again once they run out).
#[derive(Clone)]
enum Answer {
    RateLimited(Option<&'static str>),
    Subscription,
    /// A body of this many bytes, with its length declared or chunked.
    Huge {
        bytes: usize,
        declared: bool,
    },
}

const SUBSCRIPTION: &str = r#"{"id": "sub_1", "object": "subscription", "status": "active", "customer": "cus_1", "metadata": {}, "items": {"object": "list", "data": []}}"#;

/// A bare HTTP/1.1 server on port 0 that records when each request came.
async fn canned(answers: Vec<Answer>) -> (StripeApi, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut answers = answers.into_iter().peekable();
            let mut last = None;
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                seen.lock().unwrap().push(Instant::now());
                let answer = answers.next().or(last.clone()).unwrap();
                last = Some(answer.clone());
                let _ = respond(&mut socket, &answer).await;
            }
        }
    });
    let env = Env::from_pairs([
        ("STRIPE_SECRET_KEY", "rk_test_canned"),
        ("STRIPE_API_BASE", base.as_str()),
    ]);
    let api = StripeApi::from_config(&StripeApiConfig::from_env(&env).unwrap())
        .unwrap()
        .unwrap();
    (api, seen)
}

async fn respond(socket: &mut tokio::net::TcpStream, answer: &Answer) -> std::io::Result<()> {
    match answer {
        Answer::RateLimited(retry_after) => {
            let body = r#"{"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}"#;
            let retry_after = retry_after
                .map(|value| format!("Retry-After: {value}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n{retry_after}\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(body.as_bytes()).await
        }
        Answer::Subscription => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                SUBSCRIPTION.len()
            );
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(SUBSCRIPTION.as_bytes()).await
        }
        Answer::Huge { bytes, declared } => {
            let chunk = vec![b' '; 1024 * 1024];
            if *declared {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(head.as_bytes()).await?;
                let mut left = *bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    socket.write_all(&chunk[..n]).await?;
                    left -= n;
                }
                Ok(())
            } else {
                socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                    )
                    .await?;
                let mut left = *bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    socket.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    socket.write_all(&chunk[..n]).await?;
                    socket.write_all(b"\r\n").await?;
                    left -= n;
                }
                socket.write_all(b"0\r\n\r\n").await
            }
        }
    }
}

/// The pause between the first two requests.
fn gap(seen: &Mutex<Vec<Instant>>) -> Duration {
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "{} request(s)", seen.len());
    seen[1] - seen[0]
}

#[tokio::test]
async fn a_429_is_tried_again_no_sooner_than_its_retry_after() {
    let (api, seen) = canned(vec![Answer::RateLimited(Some("2")), Answer::Subscription]).await;
    api.subscription("sub_1", None, &Retry::RECONCILE)
        .await
        .unwrap();
    let gap = gap(&seen);
    assert!(gap >= Duration::from_secs(2), "tried again after {gap:?}");
}

#[tokio::test]
async fn a_429_is_never_tried_again_within_a_second() {
    for retry_after in [None, Some("0")] {
        let (api, seen) =
            canned(vec![Answer::RateLimited(retry_after), Answer::Subscription]).await;
        api.subscription("sub_1", None, &Retry::RECONCILE)
            .await
            .unwrap();
        let gap = gap(&seen);
        assert!(
            gap >= Duration::from_secs(1),
            "Retry-After {retry_after:?}: tried again after {gap:?}"
        );
    }
}

/// The webhook's budget (3 s) has no room for a pause it must not shorten:
/// it gives up, and the webhook answers 503 (Stripe delivers again).
#[tokio::test]
async fn a_retry_after_past_the_budget_ends_the_attempts() {
    let (api, seen) = canned(vec![Answer::RateLimited(Some("10")), Answer::Subscription]).await;
    let started = Instant::now();
    let error = api
        .subscription("sub_1", None, &Retry::WEBHOOK)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StripeApiError::Unavailable { attempts: 1, .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_answer_over_16_mib_is_refused() {
    for declared in [true, false] {
        let (api, seen) = canned(vec![Answer::Huge {
            bytes: 17 * 1024 * 1024,
            declared,
        }])
        .await;
        let error = api
            .subscription("sub_1", None, &Retry::RECONCILE)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StripeApiError::BadAnswer(why) if why.contains("16 MiB")),
            "declared {declared}: {error}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "refused, not tried again");
    }
    // Under the cap, read whole.
    let (api, _) = canned(vec![Answer::Huge {
        bytes: 15 * 1024 * 1024,
        declared: false,
    }])
    .await;
    let body = api
        .subscription("sub_1", None, &Retry::RECONCILE)
        .await
        .unwrap();
    assert_eq!(body.len(), 15 * 1024 * 1024);
}
