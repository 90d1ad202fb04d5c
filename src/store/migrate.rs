//! Migrations, safe on a live database and from several instances at once.
//!
//! - They run on a connection of their own with no `statement_timeout`: an
//!   index built `CONCURRENTLY` on a big table, or behind a long web-app
//!   transaction, takes as long as it takes. (The pool's 5 s limit cancelled
//!   such builds and left invalid indexes behind.)
//! - One instance migrates at a time, under an advisory lock taken by
//!   polling `pg_try_advisory_lock`, one short statement at a time. sqlx's
//!   migrator would wait in a blocking `pg_advisory_lock` instead, and a
//!   session waiting inside a statement holds a snapshot that a
//!   `CREATE INDEX CONCURRENTLY` must wait for: two instances starting
//!   together deadlocked, and the build was cancelled. So the migrator's own
//!   lock is off, and ours is held around it.
//! - A migration is never recorded as applied over an invalid index: every
//!   required index built `CONCURRENTLY` ([`concurrently_built`]) left invalid by an interrupted
//!   build is dropped before the migrator runs (so that its migration's
//!   `IF NOT EXISTS` does not skip it), and each one is checked, and built
//!   again if need be, after it.

use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::indexes::{IndexState, concurrently_built, table_exists};
use super::limit;

/// The migration lock's key for the one-`bigint` form of PostgreSQL's
/// advisory locks ("SWMIGRA" in ASCII), apart from the purge's and the
/// reconcile's.
pub const MIGRATE_LOCK_KEY: i64 = 0x0053_574D_4947_5241;

/// How often a waiting instance asks for the lock again.
const LOCK_POLL: Duration = Duration::from_millis(250);

/// Connecting, and each short statement around the migrations (not the
/// migrations themselves), must be done within this.
const SHORT_CALL: Duration = Duration::from_secs(10);

pub(super) fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!();
    // Ours is held around it (see above).
    migrator.set_locking(false);
    migrator
}

/// Applies pending migrations on a connection of its own made with
/// `options`, then makes sure every required index exists and is valid.
pub async fn migrate_with(options: &PgConnectOptions) -> Result<(), MigrateError> {
    let mut conn = limit::within_limit(SHORT_CALL, PgConnection::connect_with(options)).await?;
    let result = migrate_on(&mut conn).await;
    // Closing the connection releases the lock whatever happened.
    let _ = limit::within_limit(SHORT_CALL, conn.close()).await;
    result
}

async fn migrate_on(conn: &mut PgConnection) -> Result<(), MigrateError> {
    short(
        conn,
        "SET statement_timeout = 0; SET lock_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0",
    )
    .await?;
    lock(conn).await?;
    drop_invalid_indexes(conn).await?;
    // run_direct: `run` on a borrowed connection is not Send in a spawned task.
    migrator().run_direct(None, conn, false).await?;
    ensure_indexes(conn).await?;
    limit::within_limit(
        SHORT_CALL,
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK_KEY)
            .execute(&mut *conn),
    )
    .await?;
    Ok(())
}

/// Polls for the lock, each try its own short statement.
async fn lock(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let mut waited = false;
    loop {
        let locked: bool = limit::within_limit(
            SHORT_CALL,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(MIGRATE_LOCK_KEY)
                .fetch_one(&mut *conn),
        )
        .await?;
        if locked {
            return Ok(());
        }
        if !waited {
            tracing::info!("another instance is migrating; waiting for it");
            waited = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Drops each required index that a build left invalid, so that its
/// migration (or [`ensure_indexes`]) builds it again.
async fn drop_invalid_indexes(conn: &mut PgConnection) -> Result<(), MigrateError> {
    for index in concurrently_built() {
        if index.state(conn).await? == IndexState::Invalid {
            tracing::warn!(
                index = index.name,
                "index left invalid by an interrupted build; dropping it to build it again"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(index.drop_sql()))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Builds each required index that is missing or invalid, and fails unless
/// every one ends valid.
async fn ensure_indexes(conn: &mut PgConnection) -> Result<(), MigrateError> {
    for index in concurrently_built() {
        if !table_exists(conn, index.table).await? {
            continue;
        }
        let state = index.state(conn).await?;
        if state == IndexState::Valid {
            continue;
        }
        tracing::warn!(index = index.name, ?state, "building a required index");
        if state == IndexState::Invalid {
            sqlx::raw_sql(sqlx::AssertSqlSafe(index.drop_sql()))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(index.create_sql()))
            .execute(&mut *conn)
            .await?;
        let state = index.state(conn).await?;
        if state != IndexState::Valid {
            return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
                "index {} is {state:?} after it was built",
                index.name
            ))));
        }
    }
    Ok(())
}

async fn short(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    limit::within_limit(SHORT_CALL, sqlx::raw_sql(sql).execute(conn))
        .await
        .map(drop)
}
