//! The suite's own tools keep to the test that uses them: tests run in
//! parallel, each in its own database of one cluster, on one machine.

use std::str::FromStr;

use session_worker::store::{PURGE_LOCK_KEY, RECONCILE_LOCK_KEY};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::cable::{Cable, server_of};
use crate::helpers::*;
use crate::purge::purge_lock_holders;

/// A connection to the cluster's main database (DATABASE_URL's), which is
/// not the test's.
async fn another_database() -> PgConnection {
    let url = std::env::var("DATABASE_URL").unwrap();
    PgConnection::connect_with(&PgConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap()
}

async fn try_lock(conn: &mut PgConnection, key: i64) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Another database's run locks (another test's purge or reconcile) are not
/// this test's: counted cluster-wide, they made lock checks fail at random.
#[sqlx::test]
async fn lock_counts_keep_to_the_tests_own_database(pool: PgPool) {
    let mut elsewhere = another_database().await;
    let current: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut elsewhere)
        .await
        .unwrap();
    assert_ne!(
        pool.connect_options().get_database(),
        Some(current.as_str())
    );
    for key in [RECONCILE_LOCK_KEY, PURGE_LOCK_KEY] {
        assert!(try_lock(&mut elsewhere, key).await);
    }
    assert_eq!(advisory_lock_holders(&pool, RECONCILE_LOCK_KEY).await, 0);
    assert_eq!(purge_lock_holders(&pool).await, 0);

    // And the counts can tell: held here, they are seen.
    let mut here = pool.acquire().await.unwrap();
    for key in [RECONCILE_LOCK_KEY, PURGE_LOCK_KEY] {
        assert!(try_lock(&mut here, key).await);
    }
    assert_eq!(advisory_lock_holders(&pool, RECONCILE_LOCK_KEY).await, 1);
    assert_eq!(purge_lock_holders(&pool).await, 1);
    here.close().await.unwrap();
    elsewhere.close().await.unwrap();
}

/// A cut cable keeps its port, so that nothing else can take it before the
/// restore; meanwhile connections through it fail, and after it they work.
#[sqlx::test]
async fn a_cut_cable_keeps_its_port(pool: PgPool) {
    let mut cable = Cable::to(server_of(&pool)).await;
    let through_cable = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(cable.address.port());
    PgConnection::connect_with(&through_cable)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    cable.cut().await;
    let taken = tokio::net::TcpListener::bind(cable.address).await;
    assert!(taken.is_err(), "{} was free while cut", cable.address);
    assert!(PgConnection::connect_with(&through_cable).await.is_err());

    cable.restore().await;
    let mut conn = PgConnection::connect_with(&through_cable).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
