//! The public endpoint under hostile traffic, against the real binary: slow
//! heads and bodies, unsigned uploads, stalled uploads, a flood of bad
//! requests. (The load figures are `scripts/bench-hostile.sh`'s.)

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::{Server, database_url};
use crate::helpers::*;

/// The contract's limits, for the head and for the body after it.
const HEAD_LIMIT: Duration = Duration::from_secs(10);

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// A head of a webhook call, without its body: `signature` as the
/// Stripe-Signature value (raw bytes), `length` as Content-Length.
fn head(signature: Option<&[u8]>, length: usize) -> Vec<u8> {
    let mut head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    )
    .into_bytes();
    if let Some(signature) = signature {
        head.extend_from_slice(b"Stripe-Signature: ");
        head.extend_from_slice(signature);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A signature header of the right form that matches nothing.
fn plausible_signature() -> Vec<u8> {
    format!("t={},v1={}", now(), "0".repeat(64)).into_bytes()
}

#[derive(Debug, PartialEq)]
enum Answer {
    /// Status and body.
    Status(u16, String),
    /// Closed without an answer.
    Closed,
}

/// Reads one answer (or the connection's end), waiting at most `within`.
async fn answer(stream: &mut TcpStream, within: Duration) -> Answer {
    let read = async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&received).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((head, body)) => {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                Answer::Status(status, body.to_owned())
            }
            None => Answer::Closed,
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("an answer or the connection's end in time")
}

pub async fn ready_server(pool: &PgPool, extra: &[(&str, &str)]) -> Server {
    let server = Server::start(&database_url(pool, None), extra);
    server.wait_until("/readyz", 200).await;
    server
}

pub async fn metric(server: &Server, name: &str) -> f64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[sqlx::test]
async fn a_head_not_sent_whole_within_ten_seconds_is_closed(pool: PgPool) {
    let server = ready_server(&pool, &[]).await;
    let mut stream = connect(&server).await;
    let opened = Instant::now();
    stream
        .write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nStripe-Sig")
        .await
        .unwrap();
    // 408 or closed, but never an answer to the request, and not before the limit.
    let got = answer(&mut stream, Duration::from_secs(40)).await;
    assert!(
        matches!(got, Answer::Closed | Answer::Status(408, _)),
        "{got:?}"
    );
    assert!(opened.elapsed() >= HEAD_LIMIT - Duration::from_millis(500));
    assert!(metric(&server, "session_worker_http_header_timeouts_total").await >= 1.0);
}

#[sqlx::test]
async fn a_kept_alive_connection_that_sends_nothing_more_is_closed(pool: PgPool) {
    let server = ready_server(&pool, &[]).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let first = answer(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(first, Answer::Status(200, "ok".into()));
    let idle = Instant::now();
    assert_eq!(
        answer(&mut stream, Duration::from_secs(40)).await,
        Answer::Closed
    );
    assert!(idle.elapsed() >= HEAD_LIMIT - Duration::from_millis(500));
}

#[sqlx::test]
async fn a_body_not_whole_within_ten_seconds_of_its_head_is_408(pool: PgPool) {
    let server = ready_server(&pool, &[]).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(&head(Some(&plausible_signature()), 1000))
        .await
        .unwrap();
    let sent = Instant::now();
    stream.write_all(&[b' '; 100]).await.unwrap();
    match answer(&mut stream, Duration::from_secs(40)).await {
        Answer::Status(408, body) => {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
        other => panic!("expected 408, got {other:?}"),
    }
    assert!(sent.elapsed() >= HEAD_LIMIT - Duration::from_millis(500));
    assert_eq!(
        metric(
            &server,
            "session_worker_http_rejections_total{reason=\"body_timeout\"}"
        )
        .await,
        1.0
    );
}

#[sqlx::test]
async fn uploads_without_a_plausible_signature_are_refused_before_their_body(pool: PgPool) {
    let server = ready_server(&pool, &[]).await;
    let one_mib = 1024 * 1024;
    let stale = format!("t=1,v1={}", "0".repeat(64)).into_bytes();
    let future = format!("t={},v1={}", now() + 3600, "0".repeat(64)).into_bytes();
    let cases: [(Option<&[u8]>, usize, u16, &str); 7] = [
        (None, one_mib, 400, "missing"),
        (Some(b"t=1,v1=caf\xe9"), one_mib, 400, "not ASCII"),
        (Some(b"whatever"), one_mib, 400, "no timestamp"),
        (Some(b"t=1700000000,v1=nothex"), one_mib, 400, "64 hex"),
        // Well formed, but a timestamp that can never verify, either way.
        (Some(&stale), one_mib, 400, "tolerance"),
        (Some(&future), one_mib, 400, "tolerance"),
        // A plausible signature, but more than the limit declared.
        (Some(&plausible_signature()), 2 * one_mib, 413, "1 MiB"),
    ];
    for (signature, length, status, says) in cases {
        let mut stream = connect(&server).await;
        stream.write_all(&head(signature, length)).await.unwrap();
        // No body is sent: a server waiting for it would answer 408 at 10 s.
        match answer(&mut stream, HEAD_LIMIT - Duration::from_secs(1)).await {
            Answer::Status(got, body) => {
                assert_eq!(got, status, "{body}");
                let body: Value = serde_json::from_str(&body).unwrap();
                let error = body["error"].as_str().unwrap();
                assert!(error.contains(says), "{error:?} should say {says:?}");
            }
            Answer::Closed => panic!("closed without an answer"),
        }
    }
    assert_eq!(
        metric(
            &server,
            "session_worker_signature_failures_total{reason=\"missing_header\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&server, "session_worker_http_rejections_total").await,
        7.0
    );
    assert_eq!(
        metric(
            &server,
            "session_worker_signature_failures_total{reason=\"stale\"}"
        )
        .await,
        2.0
    );
}

/// Resident memory of a process, in bytes (Linux).
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[sqlx::test]
async fn stalled_uploads_hold_a_bounded_budget_and_webhooks_still_pass(pool: PgPool) {
    add_session(&pool, "s_alice", "alice", Some("{}"), 60, true).await;
    let server = ready_server(&pool, &[]).await;
    let before = resident(server.pid());

    // Each sends a plausible head and 1 MiB - 1 byte of its 1 MiB, and stalls.
    let stalled = 60;
    let length = 1024 * 1024;
    let mut uploads = Vec::new();
    for _ in 0..stalled {
        let mut stream = connect(&server).await;
        let head = head(Some(&plausible_signature()), length);
        uploads.push(tokio::spawn(async move {
            stream.write_all(&head).await.unwrap();
            let _ = stream.write_all(&vec![b' '; length - 1]).await;
            // Held open until the test ends (or the server answers).
            let _ = answer(&mut stream, Duration::from_secs(60)).await;
        }));
    }
    // The bodies that have room are read whole (up to the missing byte).
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut peak = before;
    while Instant::now() < deadline {
        peak = peak.max(resident(server.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let event = checkout("evt_during", now(), "alice", "cus_1", Some("sub_1"));
    let (status, body) = server.deliver(&event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(session(&pool, "s_alice").await["subscribed"], true);

    // 16 large bodies of 1 MiB may be held at once; 60 would be 60 MiB.
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 40 * 1024 * 1024,
        "grew by {} MiB",
        grown / 1024 / 1024
    );
    for upload in uploads {
        upload.abort();
    }
}

#[sqlx::test]
async fn stalled_small_uploads_from_400_connections_leave_room_for_a_webhook(pool: PgPool) {
    add_session(&pool, "s_alice", "alice", Some("{}"), 60, true).await;
    let server = ready_server(&pool, &[]).await;

    // The contract's 400 connections, each a plausible head declaring a
    // small body (64 KiB, the most the small budget takes) and all of it
    // but one byte, then stalled: each holds its room until the body
    // deadline.
    let stalled = 400;
    let length = 64 * 1024;
    let (sent, mut all_sent) = tokio::sync::mpsc::channel::<()>(stalled);
    let mut uploads = Vec::new();
    for _ in 0..stalled {
        let mut stream = connect(&server).await;
        let head = head(Some(&plausible_signature()), length);
        let sent = sent.clone();
        uploads.push(tokio::spawn(async move {
            stream.write_all(&head).await.unwrap();
            let _ = stream.write_all(&vec![b' '; length - 1]).await;
            let _ = sent.send(()).await;
            let _ = answer(&mut stream, Duration::from_secs(60)).await;
        }));
    }
    drop(sent);
    for _ in 0..stalled {
        all_sent.recv().await.unwrap();
    }
    // Every stalled connection open (the /metrics call is one more).
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server, "session_worker_http_connections_open").await <= stalled as f64 {
        assert!(
            Instant::now() < deadline,
            "the stalled connections did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let event = checkout("evt_beside", now(), "alice", "cus_1", Some("sub_1"));
    let started = Instant::now();
    let (status, body) = server.deliver(&event).await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        waited < Duration::from_secs(6),
        "a genuine webhook waited {waited:?}"
    );
    assert_eq!(session(&pool, "s_alice").await["subscribed"], true);
    for upload in uploads {
        upload.abort();
    }
}

#[sqlx::test]
async fn a_flood_of_bad_requests_is_counted_whole_but_logged_a_few_lines_a_second(pool: PgPool) {
    let server = ready_server(&pool, &[]).await;
    let http = reqwest::Client::new();
    let flood = 300;
    let started = Instant::now();
    for _ in 0..flood {
        let response = http
            .post(format!("{}/webhooks/stripe", server.base))
            .header("stripe-signature", "t=1,v1=zz")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert_eq!(
        metric(&server, "session_worker_http_rejections_total").await,
        flood as f64
    );
    let lines = server
        .logs()
        .iter()
        .filter(|line| line.contains("webhook rejected"))
        .count();
    // Five a second, in windows that need not match the clock's seconds.
    assert!(
        lines as u64 <= 5 * (seconds + 1),
        "{lines} lines in {seconds} s"
    );
    // A line of a later window says how many were left out before it.
    let says_left_out = |logs: Vec<String>| {
        logs.iter()
            .any(|line| line.contains("\"left_out\":") && !line.contains("\"left_out\":0"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !says_left_out(server.logs()) {
        assert!(
            Instant::now() < deadline,
            "no line says how many were left out"
        );
        let bad = http.post(format!("{}/webhooks/stripe", server.base)).send();
        assert_eq!(bad.await.unwrap().status(), 400);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn webhooks_answered_503_in_an_outage_are_logged_a_few_lines_a_second() {
    // No server listens on port 1: the database stays unreachable, every
    // webhook is a 503, and Stripe retries each pending event meanwhile.
    let server = Server::start("postgres://app@127.0.0.1:1/app", &[]);
    let deliveries = 200;
    let started = Instant::now();
    for n in 0..deliveries {
        let event = checkout(&format!("evt_out{n}"), now(), "alice", "cus_1", None);
        let response = server.webhook(&event).send().await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let lines = server
        .logs()
        .iter()
        .filter(|line| line.contains("webhook not applied"))
        .count();
    assert!(lines > 0, "no line about the outage at all");
    // Five a second, in windows that need not match the clock's seconds.
    assert!(
        lines as u64 <= 5 * (seconds + 1),
        "{lines} lines for {deliveries} answers in {seconds} s"
    );
}
