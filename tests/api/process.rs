//! The real binary, run as a process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use session_worker::signature::sign;
use sqlx::PgPool;

use crate::helpers::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_session-worker");

pub fn bare_command() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

#[test]
fn sign_prints_the_header_value_computed_independently() {
    let dir = std::env::temp_dir().join(format!("sw-sign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("event.json");
    std::fs::write(&file, br#"{"id":"evt_1","object":"event"}"#).unwrap();
    let output = bare_command()
        .args([
            "sign",
            "--secret",
            "whsec_test_secret",
            "--timestamp",
            "1700000000",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success());
    // printf '%s' '1700000000.{"id":"evt_1","object":"event"}' | openssl dgst -sha256 -hmac whsec_test_secret
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "t=1700000000,v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd\n"
    );
}

#[test]
fn settings_errors_name_the_variable_exit_2_and_hide_secrets() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "DATABASE_URL"),
        (
            &[("DATABASE_URL", "postgres://u:hunter2@localhost/db")],
            "STRIPE_WEBHOOK_SECRET",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://u:hunter2@localhost/db"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
                ("PORT", "eighty"),
            ],
            "PORT",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://u:hunter2@localhost/db"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
                ("WEBHOOK_TOLERANCE_SECS", "-5"),
            ],
            "WEBHOOK_TOLERANCE_SECS",
        ),
    ];
    for (vars, variable) in cases {
        let output = bare_command()
            .arg("serve")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        for secret in ["hunter2", "topsecret"] {
            assert!(
                !stderr.contains(secret) && !stdout.contains(secret),
                "{stderr}{stdout}"
            );
        }
    }
}

#[sqlx::test]
async fn migrate_applies_and_exits(pool: PgPool) {
    let output = bare_command()
        .arg("migrate")
        .env("DATABASE_URL", database_url(&pool))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_until_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not come up");
}

/// SIGTERM while a webhook waits on a row lock: the request completes and is
/// applied, and the process exits 0.
#[sqlx::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0(pool: PgPool) {
    add_session(&pool, "s", "sam", Some("{}"), 60, true).await;
    let port = free_port();
    let mut server = tokio::process::Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url(&pool))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;

    // Hold the session's row so the webhook is still in flight at SIGTERM.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_sessions WHERE session_id = 's' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let body =
        serde_json::to_vec(&checkout("evt_term", now(), "sam", "cus_s", Some("sub_s"))).unwrap();
    let request = reqwest::Client::new()
        .post(format!("{base}/webhooks/stripe"))
        .header("stripe-signature", sign(SECRET, now(), &body))
        .body(body);
    let in_flight = tokio::spawn(request.send());

    // Wait until the webhook's transaction is waiting on our lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'session-worker' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "webhook never blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = server.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.unwrap();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outcome"], "applied");
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(session(&pool, "s").await["subscribed"], true);

    // The JSON log lines parse and carry no secret.
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut server.stdout.take().unwrap(), &mut stdout)
        .await
        .unwrap();
    assert!(!stdout.contains(SECRET));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["event_id"] == "evt_term" && line["outcome"] == "applied"),
        "{stdout}"
    );
}
