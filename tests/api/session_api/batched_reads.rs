//! `GET /sessions/{id}` reads the ids that arrive together in one statement:
//! each request still gets its own session, or its own 404.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgPool};

use session_worker::store::{self, SessionStore, limit};

use super::process::{api_server, send};
use super::{add_endless_session, set_times};
use crate::binary::{Server, database_url};
use crate::blackhole::Blackhole;
use crate::cable::server_of;
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

    // Eight live ids (one of them twice), and four that are not live.
    let mut ids: Vec<String> = (0..8).map(|n| format!("live-{n}")).collect();
    ids.extend(["live-3", "expired", "ended", "never-was", "live-"].map(String::from));
    let (answers, queued_in) = read_together(&pool, &server, &ids).await;

    for (id, (status, text)) in ids.iter().zip(answers) {
        let context = format!("{id}: {text} (queued in {queued_in:?})");
        match id.strip_prefix("live-").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => {
                assert_eq!(status, 200, "{context}");
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body["session_id"], id.as_str(), "{context}");
                assert_eq!(body["username"], format!("user-{n}"), "{context}");
                assert_eq!(body["data"]["n"], n, "{context}");
            }
            None => assert_eq!(status, 404, "{context}"),
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

/// The web app writes `user_sessions` itself, `'infinity'` included: such
/// a session is read in the same statement as the others, each read gets
/// its own answer, and the times beyond chrono's years read as its ends.
#[sqlx::test]
async fn a_session_that_never_expires_is_read_in_a_batch_with_the_others(pool: PgPool) {
    add_session(&pool, "first", "user-f", Some("{}"), 60, true).await;
    add_session(&pool, "live-0", "user-0", Some(r#"{"n":0}"#), 60, true).await;
    add_endless_session(&pool, "endless", "user-e", r#"{"n":1}"#).await;
    add_session(&pool, "expired-for-good", "user-x", Some("{}"), 60, true).await;
    set_times(&pool, "expired-for-good", None, None, "-infinity").await;
    let server = api_server(&pool, &[]);
    server.wait_until("/readyz", 200).await;

    let ids = ["first", "live-0", "endless", "expired-for-good"].map(String::from);
    let (answers, queued_in) = read_together(&pool, &server, &ids).await;

    let context = format!("{answers:?} (queued in {queued_in:?})");
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 200, 200, 404], "{context}");
    let live: Value = serde_json::from_str(&answers[1].1).unwrap();
    assert_eq!(live["session_id"], "live-0");
    assert_eq!(live["data"]["n"], 0);
    let endless: Value = serde_json::from_str(&answers[2].1).unwrap();
    assert_eq!(endless["session_id"], "endless");
    assert_eq!(endless["username"], "user-e");
    assert_eq!(endless["data"]["n"], 1);
    assert_eq!(endless["created_at"], "-4712-01-01T00:00:00.000000Z");
    assert_eq!(endless["updated_at"], "+200000-01-01T00:00:00.000000Z");
    assert_eq!(endless["expires_at"], "+200000-01-01T00:00:00.000000Z");
    // The first read alone, the three others in one statement.
    assert_eq!(
        metric(&server, "session_worker_session_api_read_batch_size_count").await,
        2.0,
        "{context}"
    );
}

/// GETs `ids` from `server`, the first alone and the rest in one batch:
/// with the table held, the first read waits in the database and the
/// others queue behind it; then all go at once. The window is the reader's
/// limit on a batch (2 s): the rest must queue within it. Answers each
/// (status, body), and how long the rest took to queue.
async fn read_together(
    pool: &PgPool,
    server: &Server,
    ids: &[String],
) -> (Vec<(u16, String)>, Duration) {
    let mut holder = sqlx::PgConnection::connect(&database_url(pool, None))
        .await
        .unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let get = |id: &str| {
        let request = client
            .get(format!("{}/sessions/{id}", server.base))
            .bearer_auth(super::TOKEN);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let mut requests = vec![get(&ids[0])];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read_waits_on_the_lock(pool).await {
        assert!(
            Instant::now() < deadline,
            "the first read never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = Instant::now();
    requests.extend(ids[1..].iter().map(|id| get(id)));
    while metric(server, "session_worker_session_api_reads_waiting").await < ids.len() as f64 {
        assert!(Instant::now() < deadline, "the reads never all waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued_in = window.elapsed();
    held.commit().await.unwrap();
    drop(holder);
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    (answers, queued_in)
}

/// Whether a statement of the worker's waits on a lock in this test's own
/// database.
async fn read_waits_on_the_lock(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'session-worker' \
           AND wait_event_type = 'Lock')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn an_id_or_username_holding_nul_is_refused_before_any_statement(pool: PgPool) {
    add_session(&pool, "live-0", "alice", Some("{}"), 60, true).await;
    let server = api_server(&pool, &[]);
    server.wait_until("/readyz", 200).await;
    for method in ["GET", "PATCH", "DELETE"] {
        let body = (method == "PATCH").then_some(r#"{"data":{}}"#);
        let (status, text) = send(&server, method, "/sessions/live-0%00", body).await;
        assert_eq!(status, 404, "{method}: {text}");
    }
    let body = r#"{"username":"al\u0000ice"}"#;
    let (status, text) = send(&server, "POST", "/sessions", Some(body)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("NUL"), "{text}");
    assert_eq!(
        send(&server, "GET", "/users/al%00ice/sessions", None)
            .await
            .0,
        400
    );
    // The reads of the moment were never failed by one of them.
    assert_eq!(send(&server, "GET", "/sessions/live-0", None).await.0, 200);
}

/// A session store whose connections go through a proxy the test can
/// silence, and the proxy.
async fn through_a_blackhole(pool: &PgPool) -> (Blackhole, SessionStore) {
    let hole = Blackhole::to(server_of(pool)).await;
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(hole.address.port());
    (hole, SessionStore::new(store::pool_with(options, 2)))
}

#[sqlx::test]
async fn a_read_on_a_silent_database_fails_within_its_limit_and_the_next_one_reconnects(
    pool: PgPool,
) {
    add_session(&pool, "live-0", "alice", Some("{}"), 60, true).await;
    let (hole, sessions) = through_a_blackhole(&pool).await;
    // The reader's connection is open and has answered.
    let row = sessions.load("live-0").await.unwrap().unwrap();
    assert_eq!(row.username, "alice");

    hole.swallow();
    let started = Instant::now();
    let error = sessions.load("live-0").await.unwrap_err();
    // Cut by the reader's own limit on a batch, before the request's.
    assert!(
        started.elapsed() < limit::CALL_TIMEOUT,
        "{error} after {:?}",
        started.elapsed()
    );

    // The silent connection is not read again: were it kept, the next read
    // would wait on it for good.
    hole.heal();
    let row = sessions.load("live-0").await.unwrap().unwrap();
    assert_eq!(row.username, "alice");
}

#[sqlx::test]
async fn a_read_on_a_connection_gone_silent_while_idle_reconnects_within_its_limit(pool: PgPool) {
    add_session(&pool, "live-0", "alice", Some("{}"), 60, true).await;
    let (hole, sessions) = through_a_blackhole(&pool).await;
    assert!(sessions.load("live-0").await.unwrap().is_some());

    // The reader's connection stops answering (a partition without a
    // reset) while new connections still go through; idle past 1 s, it is
    // checked before use. The check gives up on it in time for a new one
    // within the batch's limit.
    hole.swallow();
    hole.heal();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let row = sessions
        .load("live-0")
        .await
        .unwrap_or_else(|error| panic!("{error} after {:?}", started.elapsed()))
        .unwrap();
    assert_eq!(row.username, "alice");
}

/// Ends the reader's session from the server's side, as a restart, a
/// failover or `idle_session_timeout` would; answers how many it ended.
async fn end_the_readers_session(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'session-worker' \
           AND query LIKE '%= ANY($1)%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_read_after_the_server_ended_the_readers_session_still_answers(pool: PgPool) {
    add_session(&pool, "live-0", "alice", Some("{}"), 60, true).await;
    let sessions = SessionStore::new(store::pool_with((*pool.connect_options()).clone(), 2));
    assert!(sessions.load("live-0").await.unwrap().is_some());

    // Used a moment ago, so taken unchecked: the read fails on it and goes
    // again on a new connection.
    assert_eq!(end_the_readers_session(&pool).await, 1);
    let row = sessions.load("live-0").await.unwrap().unwrap();
    assert_eq!(row.username, "alice");

    // Idle for a while, so checked first and replaced.
    assert_eq!(end_the_readers_session(&pool).await, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let row = sessions.load("live-0").await.unwrap().unwrap();
    assert_eq!(row.username, "alice");
}
