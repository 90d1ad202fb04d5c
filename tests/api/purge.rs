//! One purge run: which sessions go, in what batches, one instance at a
//! time, never waiting on a row, and what it records.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use session_worker::purge::{self, Mode, ModeChoice, Outcome, Report, Settings};
use session_worker::store::{self, DueSet, PURGE_LOCK_KEY, PurgeConnection, RowLocks};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// Another instance on the test's database: its own pool, set up as the
/// service sets up its own (statement timeout included).
pub fn instance(pool: &PgPool, connections: u32) -> PgPool {
    store::pool_with((*pool.connect_options()).clone(), connections)
}

/// A run's settings for tests: `batch_size` rows a statement in `mode`,
/// no pause, and no resizing by time (a loaded machine must not change the
/// batches a test counts).
pub fn settings(batch_size: u32, mode: Mode) -> Settings {
    Settings {
        mode: ModeChoice::Always(mode),
        pause_ratio: 0.0,
        target_statement: Duration::from_secs(3600),
        ..Settings::new(batch_size)
    }
}

/// An ordinary run (`expires_at` windows) of `batch_size` rows a statement.
pub async fn purge_now(pool: &PgPool, batch_size: u32) -> Report {
    purge_with(pool, &settings(batch_size, Mode::Ordinary)).await
}

pub async fn purge_with(pool: &PgPool, settings: &Settings) -> Report {
    match purge::run_once(pool, settings, &CancellationToken::new())
        .await
        .unwrap()
    {
        Outcome::Completed(report) => report,
        Outcome::Skipped => panic!("the purge was skipped"),
    }
}

/// The purge lock on a connection of `pool`, as a run takes it.
pub async fn lock_purge(pool: &PgPool) -> Option<PurgeConnection> {
    PurgeConnection::try_lock(pool, Settings::DEFAULT_STATEMENT_TIMEOUT)
        .await
        .unwrap()
}

pub async fn session_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT session_id FROM user_sessions ORDER BY session_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `count` sessions named `<prefix>-<n>`, expiring `expires_in_minutes` from
/// now (UTC).
pub async fn add_sessions(
    pool: &PgPool,
    prefix: &str,
    count: i32,
    expires_in_minutes: i32,
    active: bool,
) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, expires_at, is_active) \
         SELECT $1 || '-' || i, 'user-' || i, '{}', \
                (now() AT TIME ZONE 'UTC') + make_interval(mins => $3), $4 \
         FROM generate_series(1, $2) AS i",
    )
    .bind(prefix)
    .bind(count)
    .bind(expires_in_minutes)
    .bind(active)
    .execute(pool)
    .await
    .unwrap();
}

/// Connections of this database holding the purge lock (0 or 1).
pub async fn purge_lock_holders(pool: &PgPool) -> i64 {
    advisory_lock_holders(pool, PURGE_LOCK_KEY).await
}

/// Polls `done` until it holds; fails after a deadline far beyond need.
pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs each DELETE statement on `user_sessions` (how many rows it deleted)
/// into `purge_statements`.
pub async fn log_statements(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE purge_statements (seq serial, deleted bigint); \
         CREATE FUNCTION log_purge_statement() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO purge_statements (deleted) SELECT count(*) FROM gone; \
              RETURN NULL; END $$; \
         CREATE TRIGGER log_purge_statement AFTER DELETE ON user_sessions \
           REFERENCING OLD TABLE AS gone \
           FOR EACH STATEMENT EXECUTE FUNCTION log_purge_statement();",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// What each logged statement deleted, in order; empties the log.
pub async fn logged_statements(pool: &PgPool) -> Vec<i64> {
    let deleted = sqlx::query_scalar("SELECT deleted FROM purge_statements ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap();
    sqlx::query("TRUNCATE purge_statements")
        .execute(pool)
        .await
        .unwrap();
    deleted
}

/// Every DELETE on `user_sessions` waits while the test holds the gate: a
/// statement trigger that sleeps until the gate opens. A sleep, not a lock
/// wait: the purge's `lock_timeout` would cut a lock wait short.
pub async fn gate_deletes(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE purge_gate (open boolean NOT NULL); \
         INSERT INTO purge_gate VALUES (true); \
         CREATE FUNCTION wait_at_gate() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN \
                WHILE NOT (SELECT open FROM purge_gate) LOOP PERFORM pg_sleep(0.005); END LOOP; \
                RETURN NULL; \
              END $$; \
         CREATE TRIGGER wait_at_gate BEFORE DELETE ON user_sessions \
           FOR EACH STATEMENT EXECUTE FUNCTION wait_at_gate();",
    )
    .execute(pool)
    .await
    .unwrap();
}

pub async fn close_gate(pool: &PgPool) -> PoolConnection<Postgres> {
    let mut gate = pool.acquire().await.unwrap();
    sqlx::query("UPDATE purge_gate SET open = false")
        .execute(&mut *gate)
        .await
        .unwrap();
    gate
}

pub async fn open_gate(mut gate: PoolConnection<Postgres>) {
    sqlx::query("UPDATE purge_gate SET open = true")
        .execute(&mut *gate)
        .await
        .unwrap();
}

/// Statements of this database waiting at the gate (asleep in it).
pub async fn waiting_at_gate(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event = 'PgSleep'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every DELETE on `user_sessions` fails while `purge_sabotage` says so, and
/// counts its attempt in a sequence (which a rollback does not undo).
pub async fn sabotage_deletes(pool: &PgPool, on: bool) {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SEQUENCE purge_attempts; \
         CREATE TABLE purge_sabotage (on_ boolean NOT NULL); \
         INSERT INTO purge_sabotage VALUES ({on}); \
         CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM nextval('purge_attempts'); \
           IF (SELECT on_ FROM purge_sabotage) THEN RAISE EXCEPTION 'sabotaged purge'; END IF; \
           RETURN NULL; END $$; \
         CREATE TRIGGER sabotage BEFORE DELETE ON user_sessions \
           FOR EACH STATEMENT EXECUTE FUNCTION sabotage();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn exactly_the_expired_and_the_deactivated_sessions_go(pool: PgPool) {
    add_session(&pool, "expired", "ann", Some("{}"), -60, true).await;
    add_session(&pool, "expired-a-minute-ago", "ann", None, -1, true).await;
    add_session(&pool, "deactivated", "ann", Some("{}"), 60, false).await;
    add_session(&pool, "expired-and-deactivated", "bob", None, -60, false).await;
    add_session(&pool, "active", "bob", Some("{}"), 60, true).await;
    add_session(&pool, "active-a-minute-more", "bob", Some("{}"), 1, true).await;
    add_session(&pool, "active-unknown", "cat", None, 60, true).await;
    // NULL is not false: the web app never deactivated it.
    sqlx::query("UPDATE user_sessions SET is_active = NULL WHERE session_id = 'active-unknown'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, expires_at) \
         VALUES ('expires-now', 'cat', now() AT TIME ZONE 'UTC')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = purge_now(&pool, 5000).await;

    assert_eq!(
        session_ids(&pool).await,
        ["active", "active-a-minute-more", "active-unknown"]
    );
    // The four expired in one statement, the deactivated one in another.
    assert_eq!(
        (report.purged, report.batches, report.stopped),
        (5, 2, false)
    );
    assert_eq!(purge_lock_holders(&pool).await, 0);
}

/// `expires_at <= now`: a session that expires at the very instant the run
/// takes as "now" goes, one a microsecond later stays; in each statement the
/// purge has (an `expires_at` window, a page range, either way of keeping
/// off held rows).
#[sqlx::test]
async fn a_session_expiring_exactly_at_the_cutoff_goes(pool: PgPool) {
    let cutoff: NaiveDateTime = "2031-05-06T07:08:09.123456".parse().unwrap();
    for statement in [
        "window, skip locked",
        "window, lock timeout",
        "range, skip locked",
        "range, lock timeout",
    ] {
        for (session_id, offset_us) in [("before", -1), ("at", 0), ("after", 1)] {
            sqlx::query(
                "INSERT INTO user_sessions (session_id, username, expires_at) \
                 VALUES ($1, 'dan', $2 + make_interval(secs => $3 / 1e6))",
            )
            .bind(session_id)
            .bind(cutoff)
            .bind(f64::from(offset_us))
            .execute(&pool)
            .await
            .unwrap();
        }
        let mut conn = lock_purge(&pool).await.unwrap();
        let deleted = match statement {
            "window, skip locked" => {
                conn.delete_window(
                    DueSet::Expired,
                    (None, None),
                    cutoff,
                    100,
                    RowLocks::SkipLocked,
                )
                .await
                .unwrap()
                .deleted
            }
            "window, lock timeout" => {
                conn.delete_window(
                    DueSet::Expired,
                    (None, None),
                    cutoff,
                    100,
                    RowLocks::LockTimeout,
                )
                .await
                .unwrap()
                .deleted
            }
            "range, skip locked" => conn
                .delete_range(cutoff, 0, 1000, RowLocks::SkipLocked)
                .await
                .unwrap(),
            _ => conn
                .delete_range(cutoff, 0, 1000, RowLocks::LockTimeout)
                .await
                .unwrap(),
        };
        conn.unlock().await.unwrap();
        assert_eq!(deleted, 2, "{statement}");
        assert_eq!(session_ids(&pool).await, ["after"], "{statement}");
        sqlx::query("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// `user_sessions` holds UTC: the purge's "now" is UTC whatever the time
/// zone of the connection it runs on (sqlx asks for UTC; a pool set up
/// otherwise, or a server default, must not matter).
#[sqlx::test]
async fn expiry_is_judged_in_utc_whatever_the_time_zone(pool: PgPool) {
    for zone in ["Pacific/Kiritimati", "America/Anchorage"] {
        let zoned = pool_in_zone(&pool, zone).await;
        // UTC+14 would take the next hour for the past, UTC-9 the last hour
        // for the future.
        add_session(&pool, "ended-an-hour-ago", "eve", None, -60, true).await;
        add_session(&pool, "ends-in-an-hour", "eve", None, 60, true).await;

        let report = purge_now(&zoned, 5000).await;

        assert_eq!(report.purged, 1, "{zone}");
        assert_eq!(session_ids(&pool).await, ["ends-in-an-hour"], "{zone}");
        sqlx::query("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// 50 sessions (30 expired, 20 deactivated, interleaved) in batches of 7,
/// each its own transaction: the expired ones in windows of 7 and the 2
/// left, then the deactivated ones (7, 7 and 6).
#[sqlx::test]
async fn fifty_sessions_go_in_eight_batches_of_at_most_seven(pool: PgPool) {
    for i in 0..50 {
        let (expires_in, active) = if i % 5 < 2 { (60, false) } else { (-60, true) };
        add_session(&pool, &format!("s{i:02}"), "fay", None, expires_in, active).await;
    }
    add_sessions(&pool, "kept", 10, 60, true).await;
    sqlx::raw_sql(
        "CREATE TABLE purge_statements (seq serial, deleted bigint, xact bigint); \
         CREATE FUNCTION log_purge_statement() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO purge_statements (deleted, xact) \
                    SELECT count(*), txid_current() FROM gone; RETURN NULL; END $$; \
         CREATE TRIGGER log_purge_statement AFTER DELETE ON user_sessions \
           REFERENCING OLD TABLE AS gone \
           FOR EACH STATEMENT EXECUTE FUNCTION log_purge_statement();",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = purge_now(&pool, 7).await;

    let statements: Vec<(i64, i64)> =
        sqlx::query_as("SELECT deleted, xact FROM purge_statements ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let deleted: Vec<i64> = statements.iter().map(|s| s.0).collect();
    assert_eq!(deleted, [7, 7, 7, 7, 2, 7, 7, 6]);
    let mut transactions: Vec<i64> = statements.iter().map(|s| s.1).collect();
    transactions.dedup();
    assert_eq!(transactions.len(), 8, "one transaction per batch");
    assert_eq!((report.purged, report.batches), (50, 8));
    let kept = session_ids(&pool).await;
    assert!(kept.len() == 10 && kept.iter().all(|id| id.starts_with("kept-")));
}

/// A batch resumes the walk at the last expiry it deleted, inclusive: rows
/// that share an expiry across a batch boundary all go.
#[sqlx::test]
async fn sessions_sharing_an_expiry_across_batches_all_go(pool: PgPool) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, expires_at, is_active) \
         SELECT 'same-' || i, 'kim', timestamp '2020-02-02 02:02:02', i % 4 <> 0 \
         FROM generate_series(1, 20) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    add_sessions(&pool, "deactivated", 9, 60, false).await;
    sqlx::query(
        "UPDATE user_sessions SET expires_at = timestamp '2099-09-09 09:09:09' \
         WHERE session_id LIKE 'deactivated-%'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = purge_now(&pool, 7).await;

    assert_eq!((report.purged, report.batches), (29, 5));
    assert!(session_ids(&pool).await.is_empty());
}

/// Two instances start a purge together: one purges, the other skips at
/// once rather than wait, and every session goes exactly once.
#[sqlx::test]
async fn of_two_purges_started_together_one_runs_and_one_skips(pool: PgPool) {
    add_sessions(&pool, "gone", 40, -60, true).await;
    add_sessions(&pool, "kept", 5, 60, true).await;
    sqlx::raw_sql(
        "CREATE TABLE deleted_rows (id int); \
         CREATE FUNCTION log_deleted_row() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO deleted_rows VALUES (OLD.id); RETURN OLD; END $$; \
         CREATE TRIGGER log_deleted_row AFTER DELETE ON user_sessions \
           FOR EACH ROW EXECUTE FUNCTION log_deleted_row();",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The winner waits inside its first batch, still holding the purge lock,
    // until the loser has answered.
    gate_deletes(&pool).await;
    let gate = close_gate(&pool).await;

    let purges: Vec<_> = [instance(&pool, 2), instance(&pool, 2)]
        .into_iter()
        .map(|instance| {
            tokio::spawn(async move {
                purge::run_once(
                    &instance,
                    &settings(10, Mode::Ordinary),
                    &CancellationToken::new(),
                )
                .await
            })
        })
        .collect();
    wait_until("one purge has answered", async || {
        purges.iter().any(|p| p.is_finished())
    })
    .await;
    let first = purges.iter().position(|p| p.is_finished()).unwrap();
    open_gate(gate).await;
    let mut outcomes = Vec::new();
    for purge in purges {
        outcomes.push(purge.await.unwrap().unwrap());
    }

    assert_eq!(outcomes[first], Outcome::Skipped);
    let Outcome::Completed(report) = outcomes[1 - first] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(report.purged, 40);
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM deleted_rows")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (40, 40));
    assert_eq!(session_ids(&pool).await.len(), 5);
    assert_eq!(purge_lock_holders(&pool).await, 0);
}

/// A session that a webhook (or the web app) is updating is passed over,
/// without waiting for it (waiting would hit the statement timeout and fail
/// the run), and goes next round.
#[sqlx::test]
async fn a_session_locked_by_another_transaction_is_skipped_not_waited_on(pool: PgPool) {
    add_session(&pool, "held", "gil", Some("{}"), -60, true).await;
    add_session(&pool, "free-1", "gil", Some("{}"), -60, true).await;
    add_session(&pool, "free-2", "gil", Some("{}"), 60, false).await;
    let mut webhook = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE user_sessions SET session_data = '{\"subscribed\": true}' \
         WHERE session_id = 'held'",
    )
    .execute(&mut *webhook)
    .await
    .unwrap();
    let purger = instance(&pool, 2);

    let report = purge_now(&purger, 1).await;

    assert_eq!(report.purged, 2);
    assert_eq!(session_ids(&pool).await, ["held"]);
    webhook.commit().await.unwrap();
    assert_eq!(purge_now(&purger, 1).await.purged, 1);
    assert!(session_ids(&pool).await.is_empty());
}

/// A run that fails mid-way lets go of the lock (its connection never goes
/// back to the pool still holding it), and the next run, by any instance,
/// purges.
#[sqlx::test]
async fn a_failed_run_releases_the_lock(pool: PgPool) {
    add_sessions(&pool, "gone", 3, -60, true).await;
    sabotage_deletes(&pool, true).await;
    let failing = instance(&pool, 1);

    let error = purge::run_once(
        &failing,
        &settings(10, Mode::Ordinary),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();

    assert!(error.to_string().contains("sabotaged purge"), "{error}");
    wait_until("the failed run's lock is released", async || {
        purge_lock_holders(&pool).await == 0
    })
    .await;
    sqlx::query("UPDATE purge_sabotage SET on_ = false")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(purge_now(&instance(&pool, 1), 10).await.purged, 3);
    // The failing instance's pool is still usable too.
    assert_eq!(purge_now(&failing, 10).await.purged, 0);
}

fn metric<'a>(
    snapshot: &'a [(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let key = key.key();
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        (key.name() == name && labels == label.into_iter().collect::<Vec<_>>()).then_some(value)
    })
}

#[sqlx::test]
async fn each_run_is_counted_by_outcome(pool: PgPool) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);
    add_sessions(&pool, "gone", 12, -60, true).await;
    let before = chrono::Utc::now().timestamp() as f64;

    assert_eq!(purge_now(&pool, 5).await.purged, 12);
    let other = lock_purge(&instance(&pool, 1)).await.unwrap();
    let skipped = purge::run_once(
        &pool,
        &settings(5, Mode::Ordinary),
        &CancellationToken::new(),
    )
    .await;
    other.unlock().await.unwrap();
    add_sessions(&pool, "stuck", 1, -60, true).await;
    sabotage_deletes(&pool, true).await;
    let failed = purge::run_once(
        &pool,
        &settings(5, Mode::Ordinary),
        &CancellationToken::new(),
    )
    .await;

    assert_eq!(skipped.unwrap(), Outcome::Skipped);
    assert!(failed.is_err());
    let snapshot = snapshotter.snapshot().into_vec();
    let runs = "session_worker_purge_runs_total";
    for outcome in ["completed", "skipped", "failed"] {
        assert_eq!(
            metric(&snapshot, runs, Some(("outcome", outcome))),
            Some(&DebugValue::Counter(1)),
            "{outcome}"
        );
    }
    assert_eq!(
        metric(&snapshot, "session_worker_sessions_purged_total", None),
        Some(&DebugValue::Counter(12))
    );
    let Some(DebugValue::Gauge(last_success)) = metric(
        &snapshot,
        "session_worker_last_purge_success_timestamp_seconds",
        None,
    ) else {
        panic!("no last-success gauge");
    };
    assert!(last_success.0 >= before, "{last_success} < {before}");
}
