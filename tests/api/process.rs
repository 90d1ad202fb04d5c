//! The real binary, run as a process: subcommands, settings, signals.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use crate::binary::{Server, bare_command, database_url};
use crate::helpers::*;

/// Polls until a connection to `address` is refused; fails after a
/// deadline far beyond need.
async fn wait_until_refused(address: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{address} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let url = ("DATABASE_URL", "postgres://u:hunter2@localhost/db");
    let secret = ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[], "DATABASE_URL"),
        (&[url], "STRIPE_WEBHOOK_SECRET"),
        (&[url, secret, ("PORT", "eighty")], "PORT"),
        (
            &[url, secret, ("WEBHOOK_TOLERANCE_SECS", "-5")],
            "WEBHOOK_TOLERANCE_SECS",
        ),
        (&[url, secret, ("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (
            &[("DATABASE_URL", "mysql://u:hunter2@localhost/db"), secret],
            "DATABASE_URL",
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
        .env("DATABASE_URL", database_url(&pool, None))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SIGTERM while webhooks wait on a row lock: they complete and are applied,
/// new connections are refused, and the process exits 0.
#[sqlx::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0(pool: PgPool) {
    add_session(&pool, "s", "sam", Some("{}"), 60, true).await;
    let mut server = Server::start(&database_url(&pool, None), &[]);
    server.wait_until("/readyz", 200).await;

    // Hold the session's row so the webhooks are still in flight at SIGTERM.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_sessions WHERE session_id = 's' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let t = now() - 100;
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let event = subscription(
                &format!("evt_{i}"),
                "updated",
                t + i,
                "sub_s",
                "cus_s",
                "active",
                Some("sam"),
            );
            tokio::spawn(server.webhook(&event).send())
        })
        .collect();

    // Wait until the first webhook's transaction waits on our lock (the others
    // wait for the user's lock behind it). Only this test's database: other
    // tests run session-worker connections that wait on locks too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND application_name = 'session-worker' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "webhooks never blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.terminate();
    // However long the signal takes to land, the listener closes while the
    // webhooks are still held (the poll has no time limit of its own).
    wait_until_refused(server.address).await;
    blocker.commit().await.unwrap();

    for request in in_flight {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["outcome"] == "applied" || answer["outcome"] == "stale",
            "{answer}"
        );
    }
    assert_eq!(server.wait().await.code(), Some(0));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM sw_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 5);
    assert_eq!(session(&pool, "s").await["subscribed"], true);

    // The JSON log lines parse, carry the request's id, and no secret.
    let logs = server.logs();
    assert!(logs.iter().all(|line| !line.contains(SECRET)));
    let lines: Vec<Value> = logs
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let webhook_line = lines
        .iter()
        .find(|line| line["event_id"] == "evt_4")
        .unwrap_or_else(|| panic!("{logs:?}"));
    assert_eq!(webhook_line["event_type"], "customer.subscription.updated");
    assert!(webhook_line["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        webhook_line["span"]["request_id"].as_str().unwrap().len(),
        36
    );
}
