//! The purge's two modes: the `expires_at` windows of an ordinary round and the
//! `ctid` ranges of a backlog, each with both ways of keeping off held rows.

use chrono::NaiveDateTime;
use session_worker::purge::{Mode, ModeChoice, Settings};
use session_worker::store::{
    DELETE_RANGE_LOCK_TIMEOUT_SQL, DELETE_RANGE_SKIP_LOCKED_SQL, RowLocks,
};
use sqlx::{AssertSqlSafe, PgPool};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use crate::purge::*;

/// Every way a run can go: windows and ranges, each either way of
/// keeping off held rows.
fn every_way(batch_size: u32) -> [(&'static str, Settings); 4] {
    let with = |mode, row_locks| Settings {
        row_locks,
        ..settings(batch_size, mode)
    };
    [
        (
            "ordinary, skip locked",
            with(Mode::Ordinary, RowLocks::SkipLocked),
        ),
        (
            "ordinary, lock timeout",
            with(Mode::Ordinary, RowLocks::LockTimeout),
        ),
        (
            "backlog, skip locked",
            with(Mode::Backlog, RowLocks::SkipLocked),
        ),
        (
            "backlog, lock timeout",
            with(Mode::Backlog, RowLocks::LockTimeout),
        ),
    ]
}

/// Fills several pages: `count` sessions, every `due_every`-th expired an
/// hour ago, the others expiring in an hour.
async fn fill(pool: &PgPool, count: i32, due_every: i32) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, expires_at) \
         SELECT 'fill-' || i, 'user-' || i, repeat('x', 200), \
                (now() AT TIME ZONE 'UTC') + make_interval(mins => CASE WHEN i % $2 = 0 THEN -60 ELSE 60 END) \
         FROM generate_series(1, $1) AS i",
    )
    .bind(count)
    .bind(due_every)
    .execute(pool)
    .await
    .unwrap();
}

async fn kept_fill(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM user_sessions WHERE session_id LIKE 'fill-%'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Expired (to the microsecond, in UTC whatever the connection's zone),
/// deactivated, both, and `is_active` NULL (never deactivated): each way of
/// running deletes exactly the due ones, over many pages and ranges.
#[sqlx::test]
async fn every_mode_deletes_exactly_the_due_sessions(pool: PgPool) {
    for zone in ["Pacific/Kiritimati", "America/Anchorage"] {
        let zoned = pool_in_zone(&pool, zone).await;
        for (way, settings) in every_way(20) {
            fill(&pool, 600, 2).await;
            add_session(&pool, "expired", "ann", Some("{}"), -60, true).await;
            add_session(&pool, "expired-a-minute-ago", "ann", None, -1, true).await;
            add_session(&pool, "deactivated", "ann", Some("{}"), 60, false).await;
            add_session(&pool, "expired-and-deactivated", "bob", None, -60, false).await;
            add_session(&pool, "active", "bob", Some("{}"), 60, true).await;
            add_session(&pool, "active-a-minute-more", "bob", Some("{}"), 1, true).await;
            add_session(&pool, "active-unknown", "cat", None, 60, true).await;
            sqlx::query(
                "UPDATE user_sessions SET is_active = NULL WHERE session_id = 'active-unknown'",
            )
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

            let report = purge_with(&zoned, &settings).await;

            let context = format!("{way} in {zone}");
            assert_eq!(report.purged, 300 + 5, "{context}");
            assert!(report.batches > 1, "{context}: {report:?}");
            assert_eq!(kept_fill(&pool).await, 300, "{context}");
            let kept: Vec<String> = session_ids(&pool)
                .await
                .into_iter()
                .filter(|id| !id.starts_with("fill-"))
                .collect();
            assert_eq!(
                kept,
                ["active", "active-a-minute-more", "active-unknown"],
                "{context}"
            );
            sqlx::query("DELETE FROM user_sessions")
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// A session that the app (or a webhook) holds while a run goes is passed
/// over, in either mode, without an error and without waiting for it beyond
/// the `lock_timeout`, and goes next round.
#[sqlx::test]
async fn a_session_held_during_a_run_survives_it(pool: PgPool) {
    for (way, settings) in every_way(20) {
        fill(&pool, 300, 3).await;
        add_session(&pool, "held", "gil", Some("{}"), -60, true).await;
        let mut app = pool.begin().await.unwrap();
        sqlx::query(
            "UPDATE user_sessions SET session_data = '{\"cart\": 1}' WHERE session_id = 'held'",
        )
        .execute(&mut *app)
        .await
        .unwrap();

        let report = purge_with(&instance(&pool, 2), &settings).await;

        assert_eq!(report.purged, 100, "{way}");
        assert!(!report.stopped, "{way}");
        let due: Vec<String> = session_ids(&pool)
            .await
            .into_iter()
            .filter(|id| !id.starts_with("fill-"))
            .collect();
        assert_eq!(due, ["held"], "{way}");
        app.commit().await.unwrap();
        assert_eq!(purge_with(&pool, &settings).await.purged, 1, "{way}");
        sqlx::query("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// A row that another transaction updates (a new `ctid`) after a batch's
/// snapshot but before the batch locks it does not end the run early: the
/// run deletes every due row, the moved one included. (Once, such a batch
/// deleted less than a full batch and the run ended there, leaving the rest
/// of the backlog for the next round.)
#[sqlx::test]
async fn a_row_that_moves_under_a_batch_does_not_end_the_run(pool: PgPool) {
    gate_deletes(&pool).await;
    let report = move_a_row_under_the_first_batch(&pool, settings(10, Mode::Ordinary)).await;
    assert_eq!(report.purged, 30, "{report:?}");
    assert_eq!(session_ids(&pool).await, ["kept-1", "kept-2", "kept-3"]);
}

/// Thirty due rows of `ivy` and three live ones; a purge run with
/// `settings` whose first batch is held at the gate (`gate_deletes`) while
/// a due row, `gone-03`, is updated (a new `ctid`, newer than the batch's
/// snapshot); its report once the gate opens.
async fn move_a_row_under_the_first_batch(
    pool: &PgPool,
    settings: Settings,
) -> session_worker::purge::Report {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, expires_at) \
         SELECT 'gone-' || lpad(i::text, 2, '0'), 'ivy', timestamp '2020-01-01' + make_interval(mins => i) \
         FROM generate_series(1, 30) AS i",
    )
    .execute(pool)
    .await
    .unwrap();
    add_sessions(pool, "kept", 3, 60, true).await;
    let gate = close_gate(pool).await;
    let purger = instance(pool, 2);
    let run = tokio::spawn(async move {
        session_worker::purge::run_once(&purger, &settings, &CancellationToken::new()).await
    });
    wait_until("the first batch waits at the gate", async || {
        waiting_at_gate(pool).await == 1
    })
    .await;
    sqlx::query(
        "UPDATE user_sessions SET session_data = '{\"moved\": true}' WHERE session_id = 'gone-03'",
    )
    .execute(pool)
    .await
    .unwrap();
    open_gate(gate).await;

    let outcome = run.await.unwrap().unwrap();
    let session_worker::purge::Outcome::Completed(report) = outcome else {
        panic!("{outcome:?}");
    };
    report
}

/// The mode follows the planner's estimate of an analyzed table: a backlog
/// when many rows are due for the table's size, windows otherwise.
#[sqlx::test]
async fn a_run_picks_its_mode_from_the_estimate(pool: PgPool) {
    let auto = Settings {
        mode: ModeChoice::Auto,
        ..settings(20, Mode::Ordinary)
    };
    // Never analyzed (and no autovacuum to do it meanwhile): the planner's
    // counts are guesses; windows.
    sqlx::raw_sql("ALTER TABLE user_sessions SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    fill(&pool, 5000, 2).await;
    assert_eq!(purge_with(&pool, &auto).await.mode, Mode::Ordinary);
    sqlx::query("DELETE FROM user_sessions")
        .execute(&pool)
        .await
        .unwrap();
    for (due_every, expected) in [(2, Mode::Backlog), (1000, Mode::Ordinary)] {
        fill(&pool, 5000, due_every).await;
        sqlx::raw_sql("ANALYZE user_sessions")
            .execute(&pool)
            .await
            .unwrap();

        let report = purge_with(&pool, &auto).await;

        assert_eq!(report.mode, expected, "every {due_every}th due");
        assert_eq!(report.purged, 5000 / due_every as u64);
        sqlx::query("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// A backlog's statements are bare DELETEs that read their page range and
/// nothing else: a TID Range Scan, never a sequential scan, also as a
/// generic plan.
#[sqlx::test]
async fn a_backlog_range_is_a_tid_range_scan(pool: PgPool) {
    fill(&pool, 20_000, 2).await;
    sqlx::raw_sql("ANALYZE user_sessions")
        .execute(&pool)
        .await
        .unwrap();
    let cutoff: NaiveDateTime = sqlx::query_scalar("SELECT now() AT TIME ZONE 'UTC'")
        .fetch_one(&pool)
        .await
        .unwrap();
    for (name, sql) in [
        ("skip_locked", DELETE_RANGE_SKIP_LOCKED_SQL),
        ("lock_timeout", DELETE_RANGE_LOCK_TIMEOUT_SQL),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(cutoff)
            .bind(100_i64)
            .bind(200_i64)
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET plan_cache_mode = force_generic_plan; \
             PREPARE range_{name}(timestamp, bigint, bigint) AS {sql}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let generic: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN EXECUTE range_{name}('{cutoff}', 100, 200)"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for plan in [plan.join("\n"), generic.join("\n")] {
            // A bare DELETE, counted by its command tag: no RETURNING into a
            // CTE (twice as slow over a half-due table).
            assert!(plan.starts_with("Delete on user_sessions"), "{plan}");
            assert!(plan.contains("Tid Range Scan on user_sessions"), "{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
            assert!(!plan.contains("Index"), "{plan}");
        }
    }
}

/// An ordinary run starts with a statement of at most FIRST_BATCH_ROWS,
/// whatever PURGE_BATCH_SIZE (a full batch of scattered rows took over
/// 100 ms on the benchmark's machine), and grows from there.
#[sqlx::test]
async fn an_ordinary_run_starts_small_and_grows(pool: PgPool) {
    assert_eq!(session_worker::purge::FIRST_BATCH_ROWS, 2000);
    add_sessions(&pool, "gone", 6000, -60, true).await;
    add_sessions(&pool, "kept", 3, 60, true).await;
    log_statements(&pool).await;

    let report = purge_with(&pool, &settings(5000, Mode::Ordinary)).await;

    // At most doubling from one statement to the next; then the index says
    // nothing is left, and no statement runs for it.
    assert_eq!(logged_statements(&pool).await, [2000, 4000]);
    assert_eq!((report.purged, report.batches), (6000, 2));
    assert_eq!(session_ids(&pool).await, ["kept-1", "kept-2", "kept-3"]);
}

/// Either way of keeping off held rows, a due row that another transaction
/// updates (a new `ctid`) after a batch's snapshot is deleted in the same
/// run: by that very statement when it is a plain `DELETE` (it checks the
/// row again on its newest version), by the same window done again when the
/// statement locked its rows first (the locked new version is not in the
/// statement's snapshot).
#[sqlx::test]
async fn a_row_that_moves_under_a_batch_goes_in_the_same_run_either_way(pool: PgPool) {
    gate_deletes(&pool).await;
    log_statements(&pool).await;
    for (row_locks, expected) in [
        (RowLocks::LockTimeout, &[10, 10, 10][..]),
        (RowLocks::SkipLocked, &[9, 10, 10, 1][..]),
    ] {
        let settings = Settings {
            row_locks,
            ..settings(10, Mode::Ordinary)
        };
        let report = move_a_row_under_the_first_batch(&pool, settings).await;
        assert_eq!(report.purged, 30, "{row_locks:?}: {report:?}");
        let statements = logged_statements(&pool).await;
        assert_eq!(statements, expected, "{row_locks:?}");
        assert_eq!(session_ids(&pool).await, ["kept-1", "kept-2", "kept-3"]);
        sqlx::query("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
        logged_statements(&pool).await;
    }
}
