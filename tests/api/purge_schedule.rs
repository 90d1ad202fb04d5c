//! The purge on its schedule, on shutdown, and as the `purge` command.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use session_worker::config::{Env, PurgeConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::binary::{BIN, Server, bare_command, database_url};
use crate::helpers::*;
use crate::purge::*;

fn config(schedule: &str, batch_size: &str) -> PurgeConfig {
    PurgeConfig::from_env(&Env::from_pairs([
        ("PURGE_SCHEDULE", schedule),
        ("PURGE_BATCH_SIZE", batch_size),
    ]))
    .unwrap()
}

const EVERY_SECOND: &str = "* * * * * *";

#[sqlx::test]
async fn purge_schedule_off_starts_no_schedule(pool: PgPool) {
    let schedule =
        session_worker::purge::schedule(pool, &config("off", "10"), &CancellationToken::new())
            .await
            .unwrap();
    assert!(schedule.is_none());
}

/// Rounds that fail are logged and the next round runs; once the database
/// lets it, a round purges.
#[sqlx::test]
async fn a_failing_round_does_not_end_the_schedule(pool: PgPool) {
    add_sessions(&pool, "gone", 3, -60, true).await;
    add_sessions(&pool, "kept", 2, 60, true).await;
    sabotage_deletes(&pool, true).await;
    let shutdown = CancellationToken::new();
    let schedule =
        session_worker::purge::schedule(instance(&pool, 2), &config(EVERY_SECOND, "10"), &shutdown)
            .await
            .unwrap()
            .unwrap();

    wait_until("two rounds have failed", async || {
        let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM purge_attempts")
            .fetch_one(&pool)
            .await
            .unwrap();
        attempts >= 2
    })
    .await;
    sqlx::query("UPDATE purge_sabotage SET on_ = false")
        .execute(&pool)
        .await
        .unwrap();
    wait_until("a later round has purged", async || {
        session_ids(&pool).await.len() == 2
    })
    .await;

    shutdown.cancel();
    schedule.stop().await;
    assert_eq!(purge_lock_holders(&pool).await, 0);
}

/// On shutdown, a round in progress finishes the batch it is in, starts no
/// other, releases the lock, and `stop` returns only after all that.
#[sqlx::test]
async fn shutdown_stops_a_round_between_batches_and_waits_for_it(pool: PgPool) {
    add_sessions(&pool, "gone", 30, -60, true).await;
    gate_deletes(&pool).await;
    let gate = close_gate(&pool).await;
    let shutdown = CancellationToken::new();
    let schedule =
        session_worker::purge::schedule(instance(&pool, 2), &config(EVERY_SECOND, "10"), &shutdown)
            .await
            .unwrap()
            .unwrap();
    wait_until("a round is inside its first batch", async || {
        waiting_at_gate(&pool).await == 1
    })
    .await;

    shutdown.cancel();
    let stopping = tokio::spawn(schedule.stop());
    // However long we wait, `stop` cannot return while the batch is held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopping.is_finished(), "stop returned during a purge");
    assert_eq!(purge_lock_holders(&pool).await, 1);
    open_gate(gate).await;
    stopping.await.unwrap();

    assert_eq!(session_ids(&pool).await.len(), 20, "exactly one batch went");
    assert_eq!(purge_lock_holders(&pool).await, 0);
}

/// `serve` runs the purge on PURGE_SCHEDULE and logs each run's figures.
#[sqlx::test]
async fn serve_purges_on_its_schedule(pool: PgPool) {
    add_sessions(&pool, "gone", 3, -60, true).await;
    add_session(&pool, "kept", "ivy", None, 60, true).await;
    let mut server = Server::start(
        &database_url(&pool, None),
        &[("PURGE_SCHEDULE", EVERY_SECOND)],
    );
    server.wait_until("/healthz", 200).await;

    wait_until("the schedule has purged", async || {
        session_ids(&pool).await == ["kept"]
    })
    .await;
    server.terminate();
    assert_eq!(server.wait().await.code(), Some(0));

    let stdout = server.logs().join("\n");
    let runs: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["message"] == "purge completed")
        .collect();
    assert!(
        runs.iter()
            .any(|run| run["purged"] == 3 && run["batches"] == 1 && run["duration_ms"].is_u64()),
        "{stdout}"
    );
}

#[sqlx::test]
async fn the_purge_command_prints_what_it_purged(pool: PgPool) {
    add_sessions(&pool, "gone", 5, -60, true).await;
    add_session(&pool, "kept", "jo", None, 60, true).await;

    let output = bare_command()
        .arg("purge")
        .env("DATABASE_URL", database_url(&pool, None))
        .env("PURGE_BATCH_SIZE", "2")
        .output()
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let printed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("purged 5 sessions in "))
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse::<u64>().ok());
    assert!(printed.is_some(), "{stdout}");
    assert_eq!(session_ids(&pool).await, ["kept"]);
}

/// While another instance purges, the command says it skipped, and exits 0.
#[sqlx::test]
async fn the_purge_command_skips_while_another_instance_purges(pool: PgPool) {
    add_sessions(&pool, "gone", 2, -60, true).await;
    let other = lock_purge(&pool).await.unwrap();

    let output = bare_command()
        .arg("purge")
        .env("DATABASE_URL", database_url(&pool, None))
        .output()
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("purge skipped"), "{stdout}");
    assert_eq!(session_ids(&pool).await.len(), 2);
    other.unlock().await.unwrap();
}

/// An instance that dies mid-purge (SIGKILL: no unlock, no goodbye) leaves
/// no lock behind: its connection ends, and the lock with it.
#[sqlx::test]
async fn a_killed_purge_leaves_no_lock_behind(pool: PgPool) {
    add_sessions(&pool, "gone", 3, -60, true).await;
    gate_deletes(&pool).await;
    let gate = close_gate(&pool).await;
    let mut purge = tokio::process::Command::new(BIN)
        .arg("purge")
        .env_clear()
        .env("DATABASE_URL", database_url(&pool, None))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until("the purge holds the lock, inside a batch", async || {
        waiting_at_gate(&pool).await == 1 && purge_lock_holders(&pool).await == 1
    })
    .await;

    purge.kill().await.unwrap();
    // The server notices the lost client when its statement ends.
    open_gate(gate).await;

    wait_until("the lock is released", async || {
        purge_lock_holders(&pool).await == 0
    })
    .await;
    assert!(lock_purge(&pool).await.is_some());
}

/// A command, its environment, and the variable its error must name.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_purge_settings_stop_the_program_naming_the_variable() {
    let url = ("DATABASE_URL", "postgres://u:hunter2@localhost/db");
    let secret = ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret");
    let cases: [Case; 5] = [
        (
            "serve",
            &[url, secret, ("PURGE_SCHEDULE", "*/15 * * * *")],
            "PURGE_SCHEDULE",
        ),
        (
            "serve",
            &[url, secret, ("PURGE_BATCH_SIZE", "0")],
            "PURGE_BATCH_SIZE",
        ),
        (
            "purge",
            &[url, ("PURGE_BATCH_SIZE", "100001")],
            "PURGE_BATCH_SIZE",
        ),
        (
            "purge",
            &[url, ("PURGE_SCHEDULE", "sometimes")],
            "PURGE_SCHEDULE",
        ),
        ("purge", &[("PURGE_BATCH_SIZE", "10")], "DATABASE_URL"),
    ];
    for (command, vars, variable) in cases {
        let output = bare_command()
            .arg(command)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command} {variable}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
