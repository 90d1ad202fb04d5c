//! The purge's plan: an ordinary round's statements find their rows
//! through the purge indexes and never scan the table, and those indexes
//! cost the webhook's update nothing.

use chrono::NaiveDateTime;
use session_worker::store::{DEACTIVATED_SQL, EXPIRED_SQL};
use sqlx::{AssertSqlSafe, PgPool};

use crate::helpers::*;

/// Each set's statements go through its own index: the edge of a window is
/// an index-only scan in index order (no sort of the due rows), its plain
/// `DELETE` a Bitmap Index Scan then a Bitmap Heap Scan (each page once, in
/// the table's order), the `SKIP LOCKED` one an index scan, its row locks and
/// a TID scan. No sequential scan, whether PostgreSQL plans a statement for
/// the values at hand or once for all (as it does for a prepared statement).
#[sqlx::test]
async fn a_window_goes_through_its_index_and_never_scans_the_table(pool: PgPool) {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, expires_at, is_active) \
         SELECT 'sid-' || i, 'user-' || (i % 500), '{\"theme\": \"dark\"}', \
                (now() AT TIME ZONE 'UTC') + make_interval(mins => CASE WHEN i % 2 = 0 THEN -i ELSE i END), \
                i % 100 <> 1 \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE user_sessions")
        .execute(&pool)
        .await
        .unwrap();
    let cutoff: NaiveDateTime = sqlx::query_scalar("SELECT now() AT TIME ZONE 'UTC'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let at = |minutes| cutoff + chrono::Duration::minutes(minutes);
    // Windows as a walk makes them: from the start and mid-walk, of about 500
    // of the 10,000 expired rows, and of about 50 of the 200 deactivated ones
    // that have not expired.
    for (set, sql, index, windows) in [
        (
            "expired",
            EXPIRED_SQL,
            "user_sessions_expires_at_idx",
            [(None, at(-19000)), (Some(at(-5000)), at(-4000))],
        ),
        (
            "deactivated",
            DEACTIVATED_SQL,
            "user_sessions_deactivated_idx",
            [(None, at(5000)), (Some(at(10000)), at(15000))],
        ),
    ] {
        for (statement, text) in [
            ("edge", sql.edge),
            ("delete", sql.delete),
            ("delete_skip_locked", sql.delete_skip_locked),
        ] {
            let name = format!("{set}_{statement}");
            for plan in plans(&pool, &name, text, cutoff, windows).await {
                assert!(plan.contains(index), "{name}: no {index}:\n{plan}");
                assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
                match statement {
                    // In index order, stopping a batch further. (Where the
                    // whole set is fewer rows than a batch, as the 200
                    // deactivated ones, it may as well read and sort them.)
                    "edge" if set == "expired" => {
                        let scan = format!("Index Only Scan using {index}");
                        assert!(plan.contains(&scan), "{name}: {plan}");
                        assert!(!plan.contains("Sort"), "{name}: {plan}");
                    }
                    "edge" => {}
                    "delete" => {
                        // A bare DELETE, counted by its command tag, that
                        // locks each row itself.
                        assert!(
                            plan.starts_with("Delete on user_sessions"),
                            "{name}: {plan}"
                        );
                        assert!(!plan.contains("LockRows"), "{name}: {plan}");
                        // Hundreds of rows: each page once, in the table's
                        // order (a few dozen may go through the index alone).
                        if set == "expired" {
                            let scan = format!("Bitmap Index Scan on {index}");
                            assert!(plan.contains(&scan), "{name}: {plan}");
                            let heap = "Bitmap Heap Scan on user_sessions";
                            assert!(plan.contains(heap), "{name}: {plan}");
                        }
                    }
                    _ => {
                        assert!(plan.contains("LockRows"), "{name}: {plan}");
                        assert!(plan.contains("Tid Scan on user_sessions"), "{name}: {plan}");
                    }
                }
            }
        }
    }
}

/// The plans of a window's statement `sql` (`$1` from, `$2` the cutoff, `$3`
/// to, or a batch's size for the edge, `$4` a batch's size): for the values
/// at hand, for each of `windows`, and the generic plan of a prepared
/// statement.
async fn plans(
    pool: &PgPool,
    name: &str,
    sql: &str,
    cutoff: NaiveDateTime,
    windows: [(Option<NaiveDateTime>, NaiveDateTime); 2],
) -> Vec<String> {
    let (from, to) = (windows[1].0.unwrap(), windows[1].1);
    let (types, args) = if sql.starts_with("SELECT") {
        (
            "timestamp, timestamp, bigint",
            format!("'{from}', '{cutoff}', 500"),
        )
    } else if sql.contains("$4") {
        (
            "timestamp, timestamp, timestamp, bigint",
            format!("'{from}', '{cutoff}', '{to}', 5000"),
        )
    } else {
        (
            "timestamp, timestamp, timestamp",
            format!("'{from}', '{cutoff}', '{to}'"),
        )
    };
    let mut plans = Vec::new();
    for (from, to) in windows {
        let query = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(from)
            .bind(cutoff);
        let query = match types {
            "timestamp, timestamp, bigint" => query.bind(500_i64),
            "timestamp, timestamp, timestamp" => query.bind(to),
            _ => query.bind(to).bind(5000_i64),
        };
        let plan: Vec<String> = query.fetch_all(pool).await.unwrap();
        plans.push(plan.join("\n"));
    }
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE {name}({types}) AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let generic: Vec<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN EXECUTE {name}({args})")))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    plans.push(generic.join("\n"));
    plans
}

/// The purge's indexes leave the webhook's update (session_data and
/// updated_at) a HOT update: no index entry written for it.
#[sqlx::test]
async fn the_webhooks_update_stays_hot(pool: PgPool) {
    add_session(&pool, "s", "hal", Some("{}"), 60, true).await;
    let mut tx = pool.begin().await.unwrap();
    let hot_updates = async |tx: &mut sqlx::PgConnection| -> (i64, i64) {
        sqlx::query_as(
            "SELECT pg_stat_get_xact_tuples_updated('user_sessions'::regclass), \
                    pg_stat_get_xact_tuples_hot_updated('user_sessions'::regclass)",
        )
        .fetch_one(tx)
        .await
        .unwrap()
    };
    sqlx::query(
        "UPDATE user_sessions SET session_data = '{\"subscribed\": true}', \
                updated_at = (now() AT TIME ZONE 'UTC') WHERE session_id = 's'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(hot_updates(&mut tx).await, (1, 1));
    // The measure can tell: a change to an indexed column is not HOT.
    sqlx::query("UPDATE user_sessions SET expires_at = expires_at + interval '1 minute'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(hot_updates(&mut tx).await, (2, 1));
}
