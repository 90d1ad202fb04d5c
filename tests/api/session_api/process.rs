//! The real binary: logs without session ids, the metrics, the `sessions`
//! commands, and the Python client against the real server.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use super::{TOKEN, add_endless_session};
use crate::binary::{Server, bare_command, database_url};
use crate::helpers::add_session;

pub(super) fn api_server(pool: &PgPool, extra: &[(&str, &str)]) -> Server {
    let mut settings = vec![("SESSION_API_TOKEN", TOKEN)];
    settings.extend_from_slice(extra);
    Server::start(&database_url(pool, None), &settings)
}

/// Calls the server with the token; returns (status, body text).
pub(super) async fn send(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), format!("{}{path}", server.base))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn create(server: &Server, username: &str) -> String {
    let body = json!({"username": username, "data": {"a": 1}}).to_string();
    let (status, text) = send(server, "POST", "/sessions", Some(&body)).await;
    assert_eq!(status, 201, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    answer["session_id"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn no_session_id_reaches_a_log_line(pool: PgPool) {
    let mut server = api_server(
        &pool,
        &[("RUST_LOG", "debug"), ("SESSION_TOUCH_INTERVAL", "1m")],
    );
    server.wait_until("/readyz", 200).await;
    let first = create(&server, "alice").await;
    let second = create(&server, "alice").await;
    let path = format!("/sessions/{first}");
    assert_eq!(send(&server, "GET", &path, None).await.0, 200);
    let patch = Some(r#"{"data": {"b": 2}}"#);
    assert_eq!(send(&server, "PATCH", &path, patch).await.0, 200);
    assert_eq!(send(&server, "PATCH", &path, Some("{")).await.0, 400);
    assert_eq!(
        send(&server, "GET", "/sessions/an-unknown-id-0123456789", None)
            .await
            .0,
        404
    );
    let revoke = format!("/users/alice/sessions?except={first}");
    assert_eq!(send(&server, "DELETE", &revoke, None).await.0, 200);
    assert_eq!(send(&server, "DELETE", &path, None).await.0, 204);
    assert_eq!(send(&server, "DELETE", &path, None).await.0, 404);
    server.terminate();
    assert!(server.wait().await.success());

    let logs = server.logs();
    for id in [&first, &second, &"an-unknown-id-0123456789".to_owned()] {
        let found: Vec<&String> = logs
            .iter()
            .filter(|line| line.contains(id.as_str()))
            .collect();
        assert!(found.is_empty(), "{found:#?}");
    }
    assert!(
        logs.iter().any(|line| line.contains("/sessions/{id}")),
        "the masked path is logged: {logs:#?}"
    );
}

#[sqlx::test]
async fn metrics_count_creations_endings_and_active_sessions(pool: PgPool) {
    add_session(&pool, "seed-1", "alice", None, 60, true).await;
    add_session(&pool, "seed-2", "alice", None, 60, true).await;
    add_session(&pool, "seed-3", "bob", None, 60, true).await;
    add_session(&pool, "seed-expired", "alice", None, -1, true).await;
    let server = api_server(&pool, &[]);
    server.wait_until("/readyz", 200).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let text = server.get("/metrics").await.text().await.unwrap();
        if text.contains("session_worker_session_api_active_sessions 3") {
            break text;
        }
        assert!(Instant::now() < deadline, "no gauge: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!metrics.contains("session_worker_session_api_sessions_created_total"));

    let first = create(&server, "alice").await;
    create(&server, "alice").await;
    assert_eq!(
        send(&server, "DELETE", &format!("/sessions/{first}"), None)
            .await
            .0,
        204
    );
    let (status, text) = send(&server, "DELETE", "/users/alice/sessions", None).await;
    assert_eq!((status, text.as_str()), (200, r#"{"ended":3}"#));

    let metrics = server.get("/metrics").await.text().await.unwrap();
    for line in [
        "session_worker_session_api_sessions_created_total 2",
        r#"session_worker_session_api_sessions_ended_total{reason="logout"} 1"#,
        r#"session_worker_session_api_sessions_ended_total{reason="revoked"} 3"#,
        "session_worker_session_api_ended_session_duration_seconds_count 4",
        r#"session_worker_session_api_ended_session_duration_seconds_bucket{le="+Inf"} 4"#,
        // Refreshed at most once a minute: still the count at start.
        "session_worker_session_api_active_sessions 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(!metrics.contains(&first));
}

/// `sessions <args>` against `pool`'s database; (success, stdout).
fn sessions_command(pool: &PgPool, args: &[&str]) -> (bool, String) {
    let output = bare_command()
        .arg("sessions")
        .args(args)
        .env("DATABASE_URL", database_url(pool, None))
        .env("LOG_FORMAT", "text")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[sqlx::test]
async fn the_sessions_commands_list_revoke_and_count(pool: PgPool) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, created_at, expires_at, is_active) \
         SELECT id, name, (now() AT TIME ZONE 'UTC') - make_interval(hours => age), \
                (now() AT TIME ZONE 'UTC') + make_interval(hours => left_h), active \
         FROM (VALUES ('AAAAAAAA-oldest-of-alice', 'alice', 3, 5, TRUE), \
                      ('BBBBBBBB-newest-of-alice', 'alice', 2, 6, TRUE), \
                      ('CCCCCCCC-ended-of-alice', 'alice', 1, 6, FALSE), \
                      ('DDDDDDDD-expired-of-alice', 'alice', 1, -1, TRUE), \
                      ('EEEEEEEE-of-bob', 'bob', 1, 6, TRUE)) AS s(id, name, age, left_h, active)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\" ') \
             || to_char(expires_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\" ') || left(session_id, 8) || '…' \
         FROM user_sessions WHERE session_id IN ('BBBBBBBB-newest-of-alice', 'AAAAAAAA-oldest-of-alice') \
         ORDER BY created_at DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();

    let (ok, out) = sessions_command(&pool, &["list", "--user", "alice"]);
    assert!(ok);
    assert_eq!(out, format!("{}\n", expected.join("\n")));

    let (ok, out) = sessions_command(&pool, &["stats"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "active sessions: 3",
            "users with an active session: 2",
            "users with more than one: 1"
        ]
    );
    // Ages 3h, 2h and 1h (and the seconds the test took).
    assert!(
        lines[3].starts_with("median age of active sessions: 2h"),
        "{out}"
    );

    let (ok, out) = sessions_command(
        &pool,
        &[
            "revoke",
            "--user",
            "alice",
            "--except",
            "AAAAAAAA-oldest-of-alice",
        ],
    );
    assert!(ok);
    assert_eq!(out, "ended 1 sessions\n");
    let (_, out) = sessions_command(&pool, &["list", "--user", "alice"]);
    assert!(
        out.ends_with("AAAAAAAA…\n") && out.lines().count() == 1,
        "{out}"
    );
    let (ok, out) = sessions_command(&pool, &["revoke", "--user", "alice"]);
    assert!(ok);
    assert_eq!(out, "ended 1 sessions\n");
    assert_eq!(sessions_command(&pool, &["list", "--user", "alice"]).1, "");
}

#[sqlx::test]
async fn the_python_client_works_against_the_real_server(pool: PgPool) {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED the_python_client_works_against_the_real_server: python3 is not installed"
        );
        return;
    }
    let server = api_server(&pool, &[]);
    server.wait_until("/readyz", 200).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/session_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .env("SESSION_WORKER_URL", &server.base)
        .env("SESSION_API_TOKEN", TOKEN)
        .env("DEMO_USERNAME", "py_user")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
    // It really went through the worker: two sessions, both ended.
    let (created, ended): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT is_active) FROM user_sessions WHERE username = 'py_user'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((created, ended), (2, 2));
}

/// The times the web app may write itself (`'infinity'`, `'-infinity'`)
/// print as the years chrono holds at either end (4713 BC, 200000).
#[sqlx::test]
async fn the_sessions_commands_show_infinite_times_as_the_years_chrono_holds(pool: PgPool) {
    add_endless_session(&pool, "EEEEEEEE-endless", "alice", "{}").await;

    let (ok, out) = sessions_command(&pool, &["list", "--user", "alice"]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "-4712-01-01T00:00:00Z +200000-01-01T00:00:00Z EEEEEEEE…\n"
    );
    let (ok, out) = sessions_command(&pool, &["stats"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("active sessions: 1\n"), "{out}");
    let (ok, out) = sessions_command(&pool, &["revoke", "--user", "alice"]);
    assert!(ok, "{out}");
    assert_eq!(out, "ended 1 sessions\n");
}
