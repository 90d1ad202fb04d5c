//! What `session-worker doctor` reads from the database: the schema, the
//! indexes, the migrations, the role's rights and the time zones. Read only.

use std::collections::HashMap;

use super::indexes::{IndexState, REQUIRED_INDEXES, RequiredIndex};
use super::{Store, migrate};

/// A column of `user_sessions` as the database has it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionColumn {
    pub name: String,
    /// `information_schema.columns.data_type`: `integer`,
    /// `character varying`, `timestamp without time zone`...
    pub data_type: String,
}

/// Migrations compared with the binary's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationState {
    /// Known to the binary, not applied: `<version>_<description>`.
    pub pending: Vec<String>,
    /// Recorded as failed, or applied with other contents than the binary's.
    pub broken: Vec<String>,
    /// Applied, unknown to this binary (a newer one applied them).
    pub unknown: Vec<i64>,
}

/// The time zones that decide what `CURRENT_TIMESTAMP` writes into
/// `user_sessions`' `TIMESTAMP` columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZones {
    /// This connection's (sqlx asks for UTC).
    pub session: String,
    /// What a client that asks for none gets (a web app's driver, psql),
    /// and where that was read; `None` when the role may not read it.
    pub server_default: Option<(String, &'static str)>,
}

impl Store {
    /// `SHOW server_version`.
    pub async fn server_version(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(self.pool())
            .await
    }

    /// The columns of `user_sessions` in the schema the worker uses.
    pub async fn session_columns(&self) -> Result<Vec<SessionColumn>, sqlx::Error> {
        sqlx::query_as(
            "SELECT column_name::text AS name, data_type::text AS data_type \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'user_sessions' \
             ORDER BY ordinal_position",
        )
        .fetch_all(self.pool())
        .await
    }

    /// Each of [`REQUIRED_INDEXES`] with its state.
    pub async fn index_states(
        &self,
    ) -> Result<Vec<(&'static RequiredIndex, IndexState)>, sqlx::Error> {
        let names: Vec<&str> = REQUIRED_INDEXES.iter().map(|index| index.name).collect();
        let found: HashMap<String, bool> = sqlx::query_as::<_, (String, bool)>(
            "SELECT c.relname::text, i.indisvalid AND i.indisready \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1)",
        )
        .bind(&names)
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .collect();
        Ok(REQUIRED_INDEXES
            .iter()
            .map(|index| {
                let state = match found.get(index.name) {
                    Some(true) => IndexState::Valid,
                    Some(false) => IndexState::Invalid,
                    None => IndexState::Missing,
                };
                (index, state)
            })
            .collect())
    }

    /// The binary's migrations against `_sqlx_migrations`.
    pub async fn migration_state(&self) -> Result<MigrationState, sqlx::Error> {
        let exists: bool = sqlx::query_scalar(
            "SELECT to_regclass(quote_ident(current_schema()) || '._sqlx_migrations') IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await?;
        let applied: HashMap<i64, (bool, Vec<u8>)> = if exists {
            sqlx::query_as::<_, (i64, bool, Vec<u8>)>(
                "SELECT version, success, checksum FROM _sqlx_migrations",
            )
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|(version, success, checksum)| (version, (success, checksum)))
            .collect()
        } else {
            HashMap::new()
        };
        let mut state = MigrationState::default();
        let mut known = Vec::new();
        for migration in migrate::migrator().iter() {
            if migration.migration_type.is_down_migration() {
                continue;
            }
            known.push(migration.version);
            let name = format!("{}_{}", migration.version, migration.description);
            match applied.get(&migration.version) {
                None => state.pending.push(name),
                Some((true, checksum)) if *checksum == *migration.checksum => {}
                Some(_) => state.broken.push(name),
            }
        }
        state.unknown = applied
            .keys()
            .filter(|version| !known.contains(version))
            .copied()
            .collect();
        state.unknown.sort_unstable();
        Ok(state)
    }

    /// Of `wanted` (`(table, privilege)`), those the role lacks; tables that
    /// do not exist yet are left to the other checks.
    pub async fn missing_privileges(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<String>, sqlx::Error> {
        let tables: Vec<&str> = wanted.iter().map(|(table, _)| *table).collect();
        let privileges: Vec<&str> = wanted.iter().map(|(_, privilege)| *privilege).collect();
        sqlx::query_scalar(
            "SELECT w.privilege || ' on ' || w.tab FROM unnest($1::text[], $2::text[]) AS w(tab, privilege) \
             WHERE to_regclass(w.tab) IS NOT NULL AND NOT has_table_privilege(w.tab, w.privilege) \
             UNION ALL \
             SELECT 'EXECUTE on function sw_apply_event' FROM pg_proc p \
             WHERE p.proname = 'sw_apply_event' AND p.pronamespace = current_schema()::regnamespace \
               AND NOT has_function_privilege(p.oid, 'EXECUTE')",
        )
        .bind(&tables)
        .bind(&privileges)
        .fetch_all(self.pool())
        .await
    }

    pub async fn time_zones(&self) -> Result<TimeZones, sqlx::Error> {
        let session: String = sqlx::query_scalar("SELECT current_setting('TimeZone')")
            .fetch_one(self.pool())
            .await?;
        // The database's or the role's own setting wins over the server's
        // file; the file (pg_file_settings) is readable by superusers and
        // pg_read_all_settings only.
        let per_database: Option<String> = sqlx::query_scalar(
            "SELECT split_part(s, '=', 2) FROM pg_db_role_setting d, unnest(d.setconfig) AS s \
             WHERE d.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) \
               AND d.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user)) \
               AND lower(s) LIKE 'timezone=%' \
             ORDER BY d.setrole DESC, d.setdatabase DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        let server_default = match per_database {
            Some(zone) => Some((zone, "ALTER DATABASE/ROLE ... SET timezone")),
            None => sqlx::query_scalar::<_, String>(
                "SELECT setting FROM pg_file_settings \
                 WHERE lower(name) = 'timezone' AND applied ORDER BY seqno DESC LIMIT 1",
            )
            .fetch_optional(self.pool())
            .await
            .ok()
            .flatten()
            .map(|zone| (zone, "postgresql.conf")),
        };
        Ok(TimeZones {
            session,
            server_default,
        })
    }

    /// Of the 1000 newest sessions, how many were created more than five
    /// minutes "in the future" by UTC: the mark of a web app that writes
    /// local time ahead of UTC into the `TIMESTAMP` columns. At most 15
    /// hours ahead: no time zone is further ahead of UTC than 14, so a date
    /// beyond is one the app set on purpose (`'infinity'` included), not a
    /// clock in local time.
    pub async fn sessions_from_the_future(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT created_at FROM user_sessions ORDER BY id DESC LIMIT 1000) s \
             WHERE s.created_at > (now() AT TIME ZONE 'UTC') + interval '5 minutes' \
               AND s.created_at <= (now() AT TIME ZONE 'UTC') + interval '15 hours'",
        )
        .fetch_one(self.pool())
        .await
    }
}
