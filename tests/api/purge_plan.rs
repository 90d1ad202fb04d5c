//! The purge's plan: its batch statement walks the purge indexes and never
//! scans the table, and those indexes cost the webhook's update nothing.

use chrono::NaiveDateTime;
use session_worker::store::{DELETE_BATCH_LOCK_TIMEOUT_SQL, DELETE_BATCH_SQL};
use sqlx::{AssertSqlSafe, PgPool};

use crate::helpers::*;

/// Both batch statements walk the two purge indexes and delete by TID: no
/// sequential scan, whether PostgreSQL plans it for the values at hand or
/// once for all (as it does for a prepared statement).
#[sqlx::test]
async fn a_batch_walks_indexes_and_never_scans_the_table(pool: PgPool) {
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
    sqlx::raw_sql("ANALYZE user_sessions")
        .execute(&pool)
        .await
        .unwrap();
    let cutoff: NaiveDateTime = sqlx::query_scalar("SELECT now() AT TIME ZONE 'UTC'")
        .fetch_one(&pool)
        .await
        .unwrap();

    for (name, sql) in [
        ("skip_locked", DELETE_BATCH_SQL),
        ("lock_timeout", DELETE_BATCH_LOCK_TIMEOUT_SQL),
    ] {
        let plans = batch_plans(&pool, name, sql, cutoff).await;
        for plan in plans {
            for access in [
                "user_sessions_expires_at_idx",
                "user_sessions_deactivated_idx",
                "Tid Scan on user_sessions",
            ] {
                assert!(plan.contains(access), "{name}: no {access}:\n{plan}");
            }
            assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
            // Which rows stayed: an anti-join, not every found row against
            // every deleted one.
            assert!(plan.contains("Anti Join"), "{name}: {plan}");
            // Without row locks first: the DELETE locks each row itself.
            let locks_first = name == "skip_locked";
            assert_eq!(plan.contains("LockRows"), locks_first, "{name}: {plan}");
        }
    }
}

/// The plans of a batch statement: at the start of a run and resuming
/// mid-walk, for the values at hand, and the generic plan of a prepared
/// statement.
async fn batch_plans(pool: &PgPool, name: &str, sql: &str, cutoff: NaiveDateTime) -> Vec<String> {
    let middle = cutoff - chrono::Duration::minutes(5000);
    let mut plans = Vec::new();
    for from in [None, Some(middle)] {
        let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(cutoff)
            .bind(from)
            .bind(from)
            .bind(5000_i64)
            .fetch_all(pool)
            .await
            .unwrap();
        plans.push(plan.join("\n"));
    }
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan; \
         PREPARE purge_batch_{name}(timestamp, timestamp, timestamp, bigint) AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let generic: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN EXECUTE purge_batch_{name}('{cutoff}', NULL, NULL, 5000)"
    )))
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
