//! An ordinary round's `expires_at` windows: ties at a window's edge, and
//! more rows sharing one `expires_at` than a batch holds.

use session_worker::purge::{Mode, Settings};
use session_worker::store::RowLocks;
use sqlx::PgPool;

use crate::purge::*;

/// `count` expired sessions `<prefix>-<n>` sharing one `expires_at`, `at`
/// minutes after 2020-01-01.
async fn add_tied(pool: &PgPool, prefix: &str, count: i32, at: i32) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, expires_at) \
         SELECT $1 || '-' || i, 'tia', timestamp '2020-01-01' + make_interval(mins => $3) \
         FROM generate_series(1, $2) AS i",
    )
    .bind(prefix)
    .bind(count)
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
}

/// The purge's report, failing the test when the run has not ended within a
/// minute (a walk that would come round for ever).
async fn purge_that_ends(pool: &PgPool, settings: &Settings) -> session_worker::purge::Report {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        purge_with(pool, settings),
    )
    .await
    .unwrap_or_else(|_| panic!("{:?}: the purge never ended", settings.row_locks))
}

/// Rows sharing an `expires_at` at a window's edge go together in the next
/// window: a window ends before the value a batch further, so no statement
/// deletes more than a batch, and every due row goes. Either way of keeping
/// off held rows.
#[sqlx::test]
async fn ties_at_a_windows_edge_go_together_in_the_next(pool: PgPool) {
    log_statements(&pool).await;
    for row_locks in [RowLocks::LockTimeout, RowLocks::SkipLocked] {
        add_tied(&pool, "a", 3, 1).await;
        add_tied(&pool, "b", 4, 2).await;
        add_tied(&pool, "c", 4, 3).await;
        add_tied(&pool, "d", 2, 4).await;
        add_sessions(&pool, "kept", 2, 60, true).await;
        let settings = Settings {
            row_locks,
            ..settings(5, Mode::Ordinary)
        };

        let report = purge_with(&pool, &settings).await;

        // A batch of 5 from the start ends before `b` (the sixth row): the
        // three `a`; then the four `b`, the four `c`, and the two `d` left.
        assert_eq!(
            logged_statements(&pool).await,
            [3, 4, 4, 2],
            "{row_locks:?}"
        );
        assert_eq!((report.purged, report.batches), (13, 4), "{row_locks:?}");
        assert_eq!(session_ids(&pool).await, ["kept-1", "kept-2"]);
        sqlx::raw_sql("DELETE FROM user_sessions; TRUNCATE purge_statements")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// More rows sharing one `expires_at` than a batch holds go a batch at a
/// time, around a row of them that the app holds, which survives the run;
/// the rows after them go as well.
#[sqlx::test]
async fn a_tie_bigger_than_a_batch_goes_a_batch_at_a_time_around_a_held_row(pool: PgPool) {
    log_statements(&pool).await;
    for row_locks in [RowLocks::LockTimeout, RowLocks::SkipLocked] {
        add_tied(&pool, "tie", 12, 1).await;
        add_tied(&pool, "after", 3, 2).await;
        let mut app = pool.begin().await.unwrap();
        sqlx::query("UPDATE user_sessions SET session_data = '{}' WHERE session_id = 'tie-7'")
            .execute(&mut *app)
            .await
            .unwrap();
        let settings = Settings {
            row_locks,
            ..settings(5, Mode::Ordinary)
        };

        let report = purge_with(&instance(&pool, 2), &settings).await;

        // Two batches of the tie; then the held row, the one left free and
        // the three after it are fewer than a batch: the last window.
        assert_eq!(logged_statements(&pool).await, [5, 5, 4], "{row_locks:?}");
        assert_eq!(report.purged, 14, "{row_locks:?}");
        assert_eq!(session_ids(&pool).await, ["tie-7"], "{row_locks:?}");
        app.commit().await.unwrap();
        sqlx::raw_sql("DELETE FROM user_sessions; TRUNCATE purge_statements")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// Sequential scans of `user_sessions` so far, and rows deleted from it, as
/// the server's statistics have them.
async fn table_stats(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT seq_scan, n_tup_del FROM pg_stat_user_tables WHERE relid = 'user_sessions'::regclass",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Statistics gone stale (most expired rows deleted since the last ANALYZE,
/// as right after a backlog purge) make a window of a few rows look like
/// half the table, which a plan made for the batch's values reads whole; the
/// purge's windows (generic plans) go through the index all the same.
#[sqlx::test]
async fn stale_statistics_do_not_turn_a_window_into_a_table_scan(pool: PgPool) {
    // 20,000 expired rows and as many live ones, analyzed; then all but 40
    // of the expired ones deleted, spread over their whole range. On a
    // connection of its own, closed before counting: a backend writes its
    // statistics when it exits, at the latest.
    let setup = instance(&pool, 1);
    sqlx::raw_sql(
        "ALTER TABLE user_sessions SET (autovacuum_enabled = false); \
         INSERT INTO user_sessions (session_id, username, expires_at) \
         SELECT 's-' || i, 'sam', CASE WHEN i % 2 = 0 \
                THEN timestamp '2020-01-01' + make_interval(mins => i) \
                ELSE timestamp '2099-01-01' + make_interval(mins => i) END \
         FROM generate_series(1, 40000) AS i; \
         ANALYZE user_sessions; \
         DELETE FROM user_sessions WHERE expires_at < '2030-01-01' AND id % 1000 <> 0;",
    )
    .execute(&setup)
    .await
    .unwrap();
    setup.close().await;
    wait_until("the setup's statistics are in", async || {
        table_stats(&pool).await.1 == 19_960
    })
    .await;
    let (scans, _) = table_stats(&pool).await;

    let purger = instance(&pool, 1);
    let report = purge_with(&purger, &settings(5000, Mode::Ordinary)).await;
    purger.close().await;

    assert_eq!(report.purged, 40);
    wait_until("the purge's statistics are in", async || {
        table_stats(&pool).await.1 == 20_000
    })
    .await;
    assert_eq!(table_stats(&pool).await.0, scans, "a sequential scan");
}

/// `-infinity`, `infinity` and years past chrono's: due rows with them go,
/// and nothing panics decoding a window's edge (`-infinity` did), in either
/// mode.
#[sqlx::test]
async fn expires_at_beyond_any_date_neither_stops_the_purge_nor_stays(pool: PgPool) {
    for mode in [Mode::Ordinary, Mode::Backlog] {
        sqlx::raw_sql(
            "INSERT INTO user_sessions (session_id, username, expires_at, is_active) VALUES \
               ('minus-infinity', 'x', '-infinity', true), \
               ('expired', 'x', timestamp '2020-01-01', true), \
               ('ended-far', 'x', timestamp '290000-01-01', false), \
               ('ended-infinity', 'x', 'infinity', false), \
               ('kept-far', 'x', timestamp '290000-01-01', true), \
               ('kept-infinity', 'x', 'infinity', true)",
        )
        .execute(&pool)
        .await
        .unwrap();

        let report = purge_with(&pool, &settings(5, mode)).await;

        assert_eq!(report.purged, 4, "{mode:?}");
        assert_eq!(
            session_ids(&pool).await,
            ["kept-far", "kept-infinity"],
            "{mode:?}"
        );
        sqlx::raw_sql("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// More rows than a batch past either end of chrono's calendar: expired at
/// `-infinity` (or before 4713 BC), and deactivated at `infinity` (or past
/// year 200,000). Their edges come back clamped to one value each, a tie:
/// every one of them goes, in batches, and the run ends (the tie at the
/// lowest bound had held none of its rows, the one at the highest had come
/// round again for ever). In both ways of keeping off held rows.
#[sqlx::test]
async fn more_rows_past_the_calendar_than_a_batch_all_go_and_the_run_ends(pool: PgPool) {
    for row_locks in [RowLocks::LockTimeout, RowLocks::SkipLocked] {
        sqlx::raw_sql(
            "INSERT INTO user_sessions (session_id, username, expires_at, is_active)                SELECT 'minus-infinity-' || i, 'x', '-infinity', true FROM generate_series(1, 6) AS i;              INSERT INTO user_sessions (session_id, username, expires_at, is_active) VALUES                ('ancient', 'x', timestamp '4714-11-24 00:00:00 BC', true),                ('expired', 'x', timestamp '2020-01-01', true),                ('ended-far', 'x', timestamp '290000-01-01', false),                ('kept-infinity', 'x', 'infinity', true);              INSERT INTO user_sessions (session_id, username, expires_at, is_active)                SELECT 'ended-infinity-' || i, 'x', 'infinity', false FROM generate_series(1, 6) AS i;",
        )
        .execute(&pool)
        .await
        .unwrap();
        let settings = Settings {
            row_locks,
            ..settings(5, Mode::Ordinary)
        };

        let report = purge_that_ends(&pool, &settings).await;

        assert_eq!(report.purged, 15, "{row_locks:?}");
        assert_eq!(session_ids(&pool).await, ["kept-infinity"], "{row_locks:?}");
        sqlx::raw_sql("DELETE FROM user_sessions")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// A row that something keeps from going (here an app's `BEFORE DELETE`
/// trigger that returns NULL) makes a window delete fewer rows than it
/// locked, which is also what a row that moved does; the window is done
/// again a few times, then the walk goes on: the run ends, the rest go.
#[sqlx::test]
async fn a_row_that_never_goes_does_not_hold_the_purge_for_ever(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION keep_one() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN IF OLD.session_id = 'stays' THEN RETURN NULL; END IF; RETURN OLD; END $$; \
         CREATE TRIGGER keep_one BEFORE DELETE ON user_sessions \
           FOR EACH ROW EXECUTE FUNCTION keep_one();",
    )
    .execute(&pool)
    .await
    .unwrap();
    for row_locks in [RowLocks::LockTimeout, RowLocks::SkipLocked] {
        add_tied(&pool, "t", 8, 1).await;
        sqlx::query(
            "INSERT INTO user_sessions (session_id, username, expires_at) \
             VALUES ('stays', 'tia', timestamp '2020-01-01' + interval '1 minute')",
        )
        .execute(&pool)
        .await
        .unwrap();
        add_tied(&pool, "u", 3, 2).await;
        let settings = Settings {
            row_locks,
            ..settings(5, Mode::Ordinary)
        };

        let report = purge_that_ends(&pool, &settings).await;

        assert_eq!(report.purged, 11, "{row_locks:?}");
        assert_eq!(session_ids(&pool).await, ["stays"], "{row_locks:?}");
        sqlx::raw_sql("ALTER TABLE user_sessions DISABLE TRIGGER keep_one; DELETE FROM user_sessions; ALTER TABLE user_sessions ENABLE TRIGGER keep_one")
            .execute(&pool)
            .await
            .unwrap();
    }
}
