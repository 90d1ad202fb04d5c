//! The purge under faults: a batch too big for the statement timeout, a
//! database that stops answering, shutdown during a pause; and the recorded
//! events past their retention.

use std::net::SocketAddr;
use std::time::Duration;

use session_worker::purge::{self, Mode, Outcome, Settings};
use session_worker::store::{self, DELETE_EVENTS_SQL};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cable::server_of;
use crate::purge::*;

/// A TCP proxy to PostgreSQL that can stop forwarding without closing
/// anything, as a link that silently drops every packet does.
struct Blackhole {
    address: SocketAddr,
    frozen: watch::Sender<bool>,
}

impl Blackhole {
    async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (frozen, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, watching.clone()));
                tokio::spawn(pump(server_read, client_write, watching.clone()));
            }
        });
        Self { address, frozen }
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Bytes read while frozen are held until thawed, never dropped.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A round whose database stops answering mid-batch (its answer never
/// comes, its connection never closes) ends as failed after the purge's own
/// time limit; that connection is dropped, not reused; once the database
/// answers again, the next round purges.
#[sqlx::test]
async fn a_round_on_a_database_that_stopped_answering_fails_and_the_next_runs(pool: PgPool) {
    add_sessions(&pool, "gone", 30, -60, true).await;
    let blackhole = Blackhole::to(server_of(&pool)).await;
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(blackhole.address.port());
    let purger = store::pool_with(options, 1);
    let quick = Settings {
        statement_timeout: Duration::from_secs(1),
        ..settings(10, Mode::Ordinary)
    };
    gate_deletes(&pool).await;
    let gate = close_gate(&pool).await;
    let round = {
        let purger = purger.clone();
        tokio::spawn(
            async move { purge::run_once(&purger, &quick, &CancellationToken::new()).await },
        )
    };
    wait_until("the first batch waits at the gate", async || {
        waiting_at_gate(&pool).await == 1
    })
    .await;
    blackhole.freeze();
    open_gate(gate).await;

    // Without a limit of its own, the round would wait for ever: the
    // server's statement_timeout cannot reach a client that hears nothing.
    let ended = tokio::time::timeout(Duration::from_secs(30), round).await;
    let error = ended.expect("the round never ended").unwrap().unwrap_err();
    assert!(error.to_string().contains("did not answer"), "{error}");
    wait_until(
        "the connection that timed out is gone from the pool",
        async || purger.size() == 0,
    )
    .await;

    blackhole.thaw();
    // The old connection's goodbye now reaches the server, which lets go of
    // its lock.
    wait_until("the stuck round's lock is released", async || {
        purge_lock_holders(&pool).await == 0
    })
    .await;
    let report = purge_with(&purger, &quick).await;
    assert_eq!(report.purged, 20);
    assert!(session_ids(&pool).await.is_empty());
}

/// A batch too big to finish within the statement timeout is cut off by the
/// server; the run tries it again at half the size, and so on, instead of
/// failing (and failing again every round).
#[sqlx::test]
async fn a_batch_that_hits_the_statement_timeout_is_halved(pool: PgPool) {
    add_sessions(&pool, "gone", 20, -60, true).await;
    add_sessions(&pool, "kept", 2, 60, true).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_sleep(0.1); RETURN OLD; END $$; \
         CREATE TRIGGER slow_delete BEFORE DELETE ON user_sessions \
           FOR EACH ROW EXECUTE FUNCTION slow_delete();",
    )
    .execute(&pool)
    .await
    .unwrap();
    // 16 rows take 1.6 s: over the limit; 4 take 0.4 s.
    let settings = Settings {
        statement_timeout: Duration::from_secs(1),
        ..settings(16, Mode::Ordinary)
    };

    let report = purge_with(&pool, &settings).await;

    assert_eq!(report.purged, 20);
    assert_eq!(session_ids(&pool).await, ["kept-1", "kept-2"]);
}

/// Shutdown cuts a backlog's pause short: the run stops at once, between
/// two ranges, and lets go of its lock.
#[sqlx::test]
async fn shutdown_cuts_a_pause_short(pool: PgPool) {
    add_sessions(&pool, "gone", 400, -60, true).await;
    // Pauses of a minute (the cap) after each range of a few rows.
    let settings = Settings {
        pause_ratio: 1e6,
        ..settings(5, Mode::Backlog)
    };
    let shutdown = CancellationToken::new();
    let run = {
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        tokio::spawn(async move { purge::run_once(&pool, &settings, &shutdown).await })
    };
    wait_until("a first range has gone", async || {
        session_ids(&pool).await.len() < 400
    })
    .await;

    shutdown.cancel();

    let ended = tokio::time::timeout(Duration::from_secs(30), run).await;
    let Outcome::Completed(report) = ended
        .expect("the pause was not cut short")
        .unwrap()
        .unwrap()
    else {
        panic!("skipped");
    };
    assert!(report.stopped);
    assert_eq!(report.batches, 1);
    assert!(!session_ids(&pool).await.is_empty());
    assert_eq!(purge_lock_holders(&pool).await, 0);
}

async fn add_event(pool: &PgPool, event_id: &str, days_ago: i32) {
    sqlx::query(
        "INSERT INTO sw_events (event_id, event_type, created, received_at) \
         VALUES ($1, 'customer.subscription.updated', now(), now() - make_interval(days => $2))",
    )
    .bind(event_id)
    .bind(days_ago)
    .execute(pool)
    .await
    .unwrap();
}

async fn event_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM sw_events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The same rounds delete recorded events received longer ago than
/// EVENT_RETENTION (60 days by default), in batches, in either mode.
#[sqlx::test]
async fn events_past_their_retention_go_in_batches(pool: PgPool) {
    for (mode, batch_size) in [(Mode::Ordinary, 2), (Mode::Backlog, 3)] {
        for (id, days_ago) in [
            ("evt_61a", 61),
            ("evt_61b", 61),
            ("evt_400", 400),
            ("evt_90", 90),
        ] {
            add_event(&pool, id, days_ago).await;
        }
        for (id, days_ago) in [("evt_59", 59), ("evt_32", 32), ("evt_0", 0)] {
            add_event(&pool, id, days_ago).await;
        }

        let report = purge_with(&pool, &settings(batch_size, mode)).await;

        assert_eq!(report.events_purged, 4, "{mode:?}");
        assert_eq!(
            event_ids(&pool).await,
            ["evt_0", "evt_32", "evt_59"],
            "{mode:?}"
        );
        let shorter = Settings {
            event_retention: Duration::from_secs(31 * 24 * 3600),
            ..settings(batch_size, mode)
        };
        assert_eq!(purge_with(&pool, &shorter).await.events_purged, 2);
        assert_eq!(event_ids(&pool).await, ["evt_0"]);
        sqlx::query("DELETE FROM sw_events")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// The events' batches walk their index on `received_at`.
#[sqlx::test]
async fn events_are_found_through_their_index(pool: PgPool) {
    sqlx::query(
        "INSERT INTO sw_events (event_id, event_type, created, received_at) \
         SELECT 'evt_' || i, 'invoice.paid', now(), now() - make_interval(hours => i) \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql("ANALYZE sw_events")
        .execute(&pool)
        .await
        .unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {DELETE_EVENTS_SQL}")))
            .bind(chrono::Utc::now() - chrono::Duration::days(60))
            .bind(5000_i64)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .fetch_all(&pool)
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("sw_events_received_at_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}
