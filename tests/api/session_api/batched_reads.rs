//! `GET /sessions/{id}` reads the ids that arrive together in one statement:
//! each request still gets its own session, or its own 404.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgPool};

use super::process::{api_server, send};
use crate::binary::{Server, database_url};
use crate::helpers::add_session;

/// The value of the first metrics line that starts with `name ` (0 when
/// absent).
async fn metric(server: &Server, name: &str) -> f64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[sqlx::test]
async fn reads_arriving_together_share_a_statement_and_each_gets_its_own_answer(pool: PgPool) {
    for n in 0..8 {
        let data = format!(r#"{{"n":{n}}}"#);
        add_session(
            &pool,
            &format!("live-{n}"),
            &format!("user-{n}"),
            Some(&data),
            60,
            true,
        )
        .await;
    }
    add_session(&pool, "expired", "user-x", Some("{}"), -1, true).await;
    add_session(&pool, "ended", "user-x", Some("{}"), 60, false).await;
    let server = api_server(&pool, &[]);
    server.wait_until("/readyz", 200).await;

    // The table held, the first reads wait in the database and the others
    // queue behind them; then all go at once.
    let mut holder = sqlx::PgConnection::connect(&database_url(&pool, None))
        .await
        .unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    // Eight live ids (one of them twice), and four that are not live.
    let mut ids: Vec<String> = (0..8).map(|n| format!("live-{n}")).collect();
    ids.extend(["live-3", "expired", "ended", "never-was", "live-"].map(String::from));
    let requests: Vec<_> = ids
        .iter()
        .map(|id| {
            let (server, path) = (server.base.clone(), format!("/sessions/{id}"));
            tokio::spawn(async move { send_to(&server, &path).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, "session_worker_session_api_reads_waiting").await < ids.len() as f64 {
        assert!(Instant::now() < deadline, "the reads never all waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.commit().await.unwrap();

    for (id, request) in ids.iter().zip(requests) {
        let (status, text) = request.await.unwrap();
        match id.strip_prefix("live-").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => {
                assert_eq!(status, 200, "{id}: {text}");
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body["session_id"], id.as_str(), "{text}");
                assert_eq!(body["username"], format!("user-{n}"), "{text}");
                assert_eq!(body["data"]["n"], n, "{text}");
            }
            None => assert_eq!(status, 404, "{id}: {text}"),
        }
    }
    let reads = metric(&server, "session_worker_session_api_read_batch_size_sum").await;
    let statements = metric(&server, "session_worker_session_api_read_batch_size_count").await;
    assert_eq!(reads, ids.len() as f64);
    // The reader held one batch while the table was locked; all the rest
    // were queued by then and fit in one more (or two, had the queue been
    // read while it filled).
    assert!(
        statements <= 3.0,
        "{statements} statements for {reads} reads"
    );
    assert_eq!(
        metric(&server, "session_worker_session_api_reads_waiting").await,
        0.0
    );
    // Kept working once the burst is over: one more read, alone.
    assert_eq!(send(&server, "GET", "/sessions/live-5", None).await.0, 200);
}

async fn send_to(base: &str, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(super::TOKEN)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
