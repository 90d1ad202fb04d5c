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

/// How an index comes to be, which says whether [`super::migrate`] repairs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// `CREATE INDEX CONCURRENTLY` in a migration of its own (the web app
    /// keeps writing meanwhile): may be left invalid, so `migrate` drops and
    /// builds it again.
    Concurrently,
    /// `CREATE INDEX` inside its migration's transaction: all or nothing.
    InTransaction,
    /// A table's primary key, made with the table.
    PrimaryKey,
}

/// One index the worker needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequiredIndex {
    pub name: &'static str,
    pub table: &'static str,
    /// What follows `ON <table>` in its `CREATE INDEX` (for a primary key,
    /// its columns).
    pub definition: &'static str,
    /// What goes wrong without it.
    pub needed_by: &'static str,
    pub build: Build,
}

/// Every index the worker needs, which `doctor` checks: those the
/// migrations build `CONCURRENTLY` (on the web app's `user_sessions`, and on
/// `sw_events`, which every webhook writes), then the worker's own tables'.
/// A migration that adds one adds it here too (a test reads `migrations/`).
pub const REQUIRED_INDEXES: &[RequiredIndex] = &[
    RequiredIndex {
        name: "user_sessions_username_idx",
        table: "user_sessions",
        definition: "(username)",
        needed_by: "the webhook's update of a user's sessions (without it, a scan of the table per event)",
        build: Build::Concurrently,
    },
    RequiredIndex {
        name: "user_sessions_expires_at_idx",
        table: "user_sessions",
        definition: "(expires_at)",
        needed_by: "the purge's walk over expired sessions",
        build: Build::Concurrently,
    },
    RequiredIndex {
        name: "user_sessions_deactivated_idx",
        table: "user_sessions",
        definition: "(expires_at) WHERE is_active = false",
        needed_by: "the purge's walk over deactivated sessions",
        build: Build::Concurrently,
    },
    RequiredIndex {
        name: "sw_events_received_at_idx",
        table: "sw_events",
        definition: "(received_at)",
        needed_by: "the purge's deletion of events past EVENT_RETENTION",
        build: Build::Concurrently,
    },
    RequiredIndex {
        name: "sw_events_pkey",
        table: "sw_events",
        definition: "(event_id)",
        needed_by: "it makes each event take effect once",
        build: Build::PrimaryKey,
    },
    RequiredIndex {
        name: "sw_customers_pkey",
        table: "sw_customers",
        definition: "(customer_id)",
        needed_by: "customers are found by id",
        build: Build::PrimaryKey,
    },
    RequiredIndex {
        name: "sw_subscriptions_pkey",
        table: "sw_subscriptions",
        definition: "(subscription_id)",
        needed_by: "subscriptions are found by id",
        build: Build::PrimaryKey,
    },
    RequiredIndex {
        name: "sw_subscriptions_username_idx",
        table: "sw_subscriptions",
        definition: "(username)",
        needed_by: "a user's subscriptions are summed up by it",
        build: Build::InTransaction,
    },
    RequiredIndex {
        name: "sw_subscriptions_orphans_idx",
        table: "sw_subscriptions",
        definition: "(customer_id) WHERE username IS NULL",
        needed_by: "a checkout finds the subscriptions waiting for their user by it",
        build: Build::InTransaction,
    },
    RequiredIndex {
        name: "sw_entitlements_pkey",
        table: "sw_entitlements",
        definition: "(customer_id)",
        needed_by: "a customer's entitlements are found by id",
        build: Build::PrimaryKey,
    },
    RequiredIndex {
        name: "sw_customers_username_idx",
        table: "sw_customers",
        definition: "(username)",
        needed_by: "a user's customers are found by it, for every event",
        build: Build::InTransaction,
    },
    RequiredIndex {
        name: "sw_subscriptions_customer_idx",
        table: "sw_subscriptions",
        definition: "(customer_id)",
        needed_by: "a customer's subscriptions are found by it when a checkout re-maps it",
        build: Build::InTransaction,
    },
    RequiredIndex {
        name: "sw_session_lifetimes_pkey",
        table: "sw_session_lifetimes",
        definition: "(session_row_id)",
        needed_by: "a session's own lifetime is found by its row id",
        build: Build::PrimaryKey,
    },
];

/// The indexes [`super::migrate`] repairs: those built `CONCURRENTLY`.
pub fn concurrently_built() -> impl Iterator<Item = &'static RequiredIndex> {
    REQUIRED_INDEXES
        .iter()
        .filter(|index| index.build == Build::Concurrently)
}

/// What the catalog says of a required index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexState {
    Valid,
    /// Left by a build that did not finish: kept up to date, never used.
    Invalid,
    Missing,
}

impl RequiredIndex {
    /// The statement that makes it again without blocking the web app:
    /// `CREATE INDEX CONCURRENTLY IF NOT EXISTS ...` (outside a
    /// transaction), or `ALTER TABLE ... ADD PRIMARY KEY ...`.
    pub fn create_sql(&self) -> String {
        match self.build {
            Build::PrimaryKey => format!(
                "ALTER TABLE {} ADD PRIMARY KEY {}",
                self.table, self.definition
            ),
            Build::Concurrently | Build::InTransaction => format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}",
                self.name, self.table, self.definition
            ),
        }
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

    /// Every index the migrations make, as (name, table, definition, build),
    /// read from their text: `CREATE INDEX` statements and the primary keys
    /// of the worker's tables (`CREATE TABLE` without `IF NOT EXISTS`; the
    /// web app's `user_sessions` and its keys are its own).
    fn indexes_in_migrations() -> Vec<(String, String, String, Build)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            // Comments out: they mention keys and indexes in prose.
            let text: String = text
                .lines()
                .map(|line| line.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            found.extend(created_indexes(&text));
            found.extend(primary_keys(&text));
        }
        found
    }

    fn created_indexes(text: &str) -> Vec<(String, String, String, Build)> {
        let mut found = Vec::new();
        for statement in text.split("CREATE INDEX ").skip(1) {
            let statement = statement.split(';').next().unwrap();
            let mut words = statement.split_whitespace().peekable();
            let mut build = Build::InTransaction;
            if words.peek() == Some(&"CONCURRENTLY") {
                build = Build::Concurrently;
                words.next();
            }
            if words.peek() == Some(&"IF") {
                assert_eq!(
                    words.by_ref().take(3).collect::<Vec<_>>(),
                    ["IF", "NOT", "EXISTS"]
                );
            }
            let name = words.next().unwrap().to_owned();
            assert_eq!(words.next(), Some("ON"), "{statement}");
            let table = words.next().unwrap().to_owned();
            let definition = words.collect::<Vec<_>>().join(" ");
            found.push((name, table, definition, build));
        }
        found
    }

    fn primary_keys(text: &str) -> Vec<(String, String, String, Build)> {
        let mut found = Vec::new();
        for statement in text.split("CREATE TABLE ").skip(1) {
            if statement.starts_with("IF NOT EXISTS") {
                continue;
            }
            let table = statement.split_whitespace().next().unwrap().to_owned();
            let body = statement.split(");").next().unwrap();
            for column in body.lines() {
                let words: Vec<&str> = column.split_whitespace().collect();
                assert!(
                    !column.contains("UNIQUE") && !column.contains("REFERENCES"),
                    "{table}: a constraint this test does not read yet: {column}"
                );
                if column.contains("PRIMARY KEY") {
                    assert!(
                        !words[0].eq_ignore_ascii_case("PRIMARY"),
                        "{table}: a table-level primary key this test does not read yet"
                    );
                    found.push((
                        format!("{table}_pkey"),
                        table.clone(),
                        format!("({})", words[0]),
                        Build::PrimaryKey,
                    ));
                }
            }
        }
        found
    }

    #[test]
    fn every_index_the_migrations_make_is_required_and_vice_versa() {
        let made = indexes_in_migrations();
        for (name, table, definition, build) in &made {
            let listed = REQUIRED_INDEXES.iter().find(|index| index.name == name);
            let listed = listed.unwrap_or_else(|| {
                panic!("{name}, made by a migration, is missing from REQUIRED_INDEXES")
            });
            assert_eq!(
                (listed.table, listed.definition, listed.build),
                (table.as_str(), definition.as_str(), *build),
                "{name}"
            );
        }
        for index in REQUIRED_INDEXES {
            assert!(
                made.iter().any(|(name, ..)| name == index.name),
                "{} is required but no migration makes it",
                index.name
            );
        }
        let names: std::collections::HashSet<_> =
            REQUIRED_INDEXES.iter().map(|index| index.name).collect();
        assert_eq!(names.len(), REQUIRED_INDEXES.len(), "a name listed twice");
    }
}
