//! The indexes the worker needs on the web app's `user_sessions`, in one
//! place: the migrations build them, [`super::migrate`] makes sure each one
//! exists and is valid afterwards, and `doctor` can check them.
//!
//! They are built `CONCURRENTLY` (the web app keeps writing meanwhile), and
//! such a build that is cancelled or fails leaves an INVALID index behind,
//! which PostgreSQL keeps up to date but never reads, and which
//! `CREATE INDEX ... IF NOT EXISTS` then skips. So an index counts only when
//! `pg_index.indisvalid` says so, and an invalid one is dropped and built
//! again.

use sqlx::PgConnection;

/// One index the worker needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequiredIndex {
    pub name: &'static str,
    pub table: &'static str,
    /// What follows `ON <table>` in its `CREATE INDEX`.
    pub definition: &'static str,
    /// What goes wrong without it.
    pub needed_by: &'static str,
}

/// Every index the migrations build `CONCURRENTLY` (on the web app's
/// `user_sessions`, and on `sw_events`, which every webhook writes). A
/// migration that adds one adds it here too.
pub const REQUIRED_INDEXES: &[RequiredIndex] = &[
    RequiredIndex {
        name: "user_sessions_username_idx",
        table: "user_sessions",
        definition: "(username)",
        needed_by: "the webhook's update of a user's sessions (without it, a scan of the table per event)",
    },
    RequiredIndex {
        name: "user_sessions_expires_at_idx",
        table: "user_sessions",
        definition: "(expires_at)",
        needed_by: "the purge's walk over expired sessions",
    },
    RequiredIndex {
        name: "user_sessions_deactivated_idx",
        table: "user_sessions",
        definition: "(expires_at) WHERE is_active = false",
        needed_by: "the purge's walk over deactivated sessions",
    },
    RequiredIndex {
        name: "sw_events_received_at_idx",
        table: "sw_events",
        definition: "(received_at)",
        needed_by: "the purge's deletion of events past EVENT_RETENTION",
    },
];

/// What the catalog says of a required index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexState {
    Valid,
    /// Left by a build that did not finish: kept up to date, never used.
    Invalid,
    Missing,
}

impl RequiredIndex {
    /// `CREATE INDEX CONCURRENTLY IF NOT EXISTS ...` (outside a transaction).
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}",
            self.name, self.table, self.definition
        )
    }

    /// `DROP INDEX CONCURRENTLY IF EXISTS ...` (outside a transaction).
    pub fn drop_sql(&self) -> String {
        format!("DROP INDEX CONCURRENTLY IF EXISTS {}", self.name)
    }

    /// The index's state in the connection's search path.
    pub async fn state(&self, conn: &mut PgConnection) -> Result<IndexState, sqlx::Error> {
        let valid: Option<bool> = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i \
             WHERE i.indexrelid = to_regclass($1)",
        )
        .bind(self.name)
        .fetch_optional(conn)
        .await?;
        Ok(match valid {
            Some(true) => IndexState::Valid,
            Some(false) => IndexState::Invalid,
            None => IndexState::Missing,
        })
    }
}

/// Whether `table` exists yet (before the first migration it does not,
/// unless the web app made it).
pub(super) async fn table_exists(
    conn: &mut PgConnection,
    table: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_name_the_index_and_its_table() {
        let index = REQUIRED_INDEXES[2];
        assert_eq!(
            index.create_sql(),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS user_sessions_deactivated_idx \
             ON user_sessions (expires_at) WHERE is_active = false"
        );
        assert_eq!(
            index.drop_sql(),
            "DROP INDEX CONCURRENTLY IF EXISTS user_sessions_deactivated_idx"
        );
    }
}
