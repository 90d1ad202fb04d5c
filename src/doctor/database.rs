//! The database checks of `doctor`: it answers; `user_sessions` has the
//! contract's columns; migrations are applied; every index the worker needs
//! exists and is valid; the role may do what the worker does; time zones.

use super::Check;
use crate::config::{DatabaseConfig, Env};
use crate::store::indexes::IndexState;
use crate::store::{self, Store};

/// `user_sessions` as the contract (and the web app) has it: name and the
/// `information_schema` types that work.
const SESSION_COLUMNS: &[(&str, &[&str])] = &[
    ("id", &["integer", "bigint"]),
    ("session_id", &["character varying", "text"]),
    ("username", &["character varying", "text"]),
    // The worker reads and writes it as text (json keeps the text as
    // written, so it works too).
    ("session_data", &["text", "character varying", "json"]),
    ("created_at", &["timestamp without time zone"]),
    ("updated_at", &["timestamp without time zone"]),
    ("expires_at", &["timestamp without time zone"]),
    ("is_active", &["boolean"]),
];

/// What the worker does to each table: the webhook updates sessions, the
/// purge deletes them; its own tables it reads and writes.
const PRIVILEGES: &[(&str, &str)] = &[
    ("user_sessions", "SELECT"),
    ("user_sessions", "UPDATE"),
    ("user_sessions", "DELETE"),
    ("sw_events", "SELECT"),
    ("sw_events", "INSERT"),
    ("sw_events", "UPDATE"),
    ("sw_events", "DELETE"),
    ("sw_customers", "SELECT"),
    ("sw_customers", "INSERT"),
    ("sw_customers", "UPDATE"),
    ("sw_subscriptions", "SELECT"),
    ("sw_subscriptions", "INSERT"),
    ("sw_subscriptions", "UPDATE"),
    ("sw_subscriptions", "DELETE"),
];

pub async fn checks(env: &Env) -> Vec<Check> {
    let config = match DatabaseConfig::from_env(env) {
        Ok(config) => config,
        Err(error) => {
            return vec![Check::fail(
                "database",
                format!("{error}; the database checks were skipped"),
            )];
        }
    };
    let pool = match store::pool(&config, 1) {
        Ok(pool) => pool,
        Err(error) => {
            return vec![Check::fail(
                "database",
                format!("DATABASE_URL cannot be used: {error}"),
            )];
        }
    };
    let store = Store::new(pool.clone(), Vec::new());
    let checks = against(&store).await;
    pool.close().await;
    checks
}

async fn against(store: &Store) -> Vec<Check> {
    let mut checks = Vec::new();
    match store.server_version().await {
        Ok(version) => checks.push(Check::pass(
            "database",
            format!("PostgreSQL {version} answers"),
        )),
        Err(error) => {
            checks.push(Check::fail(
                "database",
                format!("does not answer: {error}; check DATABASE_URL (on Render, the database's internal URL) and that the database is up"),
            ));
            return checks;
        }
    }
    checks.push(or_error("user_sessions", columns(store).await));
    checks.push(or_error("migrations", migrations(store).await));
    match indexes(store).await {
        Ok(found) => checks.extend(found),
        Err(error) => checks.push(Check::fail(
            "indexes",
            format!("could not be read: {error}"),
        )),
    }
    checks.push(or_error("privileges", privileges(store).await));
    checks.push(or_error("time zones", time_zones(store).await));
    checks
}

fn or_error(subject: &str, result: Result<Check, sqlx::Error>) -> Check {
    result.unwrap_or_else(|error| Check::fail(subject, format!("could not be checked: {error}")))
}

async fn columns(store: &Store) -> Result<Check, sqlx::Error> {
    const SUBJECT: &str = "user_sessions";
    let found = store.session_columns().await?;
    if found.is_empty() {
        return Ok(Check::fail(
            SUBJECT,
            "the table does not exist: run `session-worker migrate` (it creates it as the web app does) or point DATABASE_URL at the web app's database",
        ));
    }
    let mut problems = Vec::new();
    for (name, types) in SESSION_COLUMNS {
        match found.iter().find(|column| column.name == *name) {
            None => problems.push(format!("has no column {name}")),
            Some(column) if !types.contains(&column.data_type.as_str()) => problems.push(format!(
                "column {name} is {}, expected {}",
                column.data_type,
                types.join(" or ")
            )),
            Some(_) => {}
        }
    }
    Ok(if problems.is_empty() {
        Check::pass(SUBJECT, "has the contract's columns and types")
    } else {
        Check::fail(
            SUBJECT,
            format!(
                "{}: the worker needs the web app's table as the contract describes it (docs/rules.md); ALTER TABLE it to match",
                problems.join("; ")
            ),
        )
    })
}

async fn migrations(store: &Store) -> Result<Check, sqlx::Error> {
    const SUBJECT: &str = "migrations";
    let state = store.migration_state().await?;
    let mut problems = Vec::new();
    if !state.pending.is_empty() {
        problems.push(format!(
            "{} pending ({}): run `session-worker migrate` (render.yaml's preDeployCommand runs it on each deploy)",
            state.pending.len(),
            state.pending.join(", ")
        ));
    }
    if !state.broken.is_empty() {
        problems.push(format!(
            "failed or changed since applied: {}; look at the table _sqlx_migrations and the log of the last `migrate`",
            state.broken.join(", ")
        ));
    }
    if !state.unknown.is_empty() {
        problems.push(format!(
            "applied by a newer session-worker ({:?}): deploy that version, this one refuses to start",
            state.unknown
        ));
    }
    Ok(if problems.is_empty() {
        Check::pass(SUBJECT, "all applied")
    } else {
        Check::fail(SUBJECT, problems.join("; "))
    })
}

async fn indexes(store: &Store) -> Result<Vec<Check>, sqlx::Error> {
    let states = store.index_states().await?;
    let mut checks = Vec::new();
    for (index, state) in &states {
        let subject = format!("index {}", index.name);
        match state {
            IndexState::Valid => {}
            IndexState::Missing => checks.push(Check::fail(
                subject,
                format!(
                    "is missing ({}): run `{}`",
                    index.needed_by,
                    index.create_sql()
                ),
            )),
            IndexState::Invalid => checks.push(Check::fail(
                subject,
                format!(
                    "is INVALID, left by an interrupted build (queries cannot use it, writes still pay for it): run `DROP INDEX CONCURRENTLY {}` then `{}`",
                    index.name,
                    index.create_sql()
                ),
            )),
        }
    }
    if checks.is_empty() {
        checks.push(Check::pass(
            "indexes",
            format!("all {} the worker needs exist and are valid", states.len()),
        ));
    }
    Ok(checks)
}

async fn privileges(store: &Store) -> Result<Check, sqlx::Error> {
    const SUBJECT: &str = "privileges";
    let missing = store.missing_privileges(PRIVILEGES).await?;
    Ok(if missing.is_empty() {
        Check::pass(
            SUBJECT,
            "the role may read and write user_sessions and the worker's tables",
        )
    } else {
        Check::fail(
            SUBJECT,
            format!(
                "the role lacks {}: GRANT them to the role DATABASE_URL names",
                missing.join(", ")
            ),
        )
    })
}

async fn time_zones(store: &Store) -> Result<Check, sqlx::Error> {
    const SUBJECT: &str = "time zones";
    let zones = store.time_zones().await?;
    let server = match &zones.server_default {
        Some((zone, source)) => format!("{zone} (from {source})"),
        None => "unknown (the role may not read the server's settings)".to_owned(),
    };
    let utc = |zone: &str| {
        ["utc", "etc/utc", "gmt", "etc/gmt", "zulu", "uct"]
            .contains(&zone.to_ascii_lowercase().as_str())
    };
    let server_utc = zones
        .server_default
        .as_ref()
        .is_some_and(|(zone, _)| utc(zone));
    let future = store.sessions_from_the_future().await.unwrap_or(0);
    if future > 0 {
        return Ok(Check::fail(
            SUBJECT,
            format!(
                "{future} of the newest sessions were created after now in UTC: the web app writes local time (server default {server}) into user_sessions' TIMESTAMP columns, so sessions expire and are purged hours off; have it write UTC (SET TIME ZONE 'UTC' on its connections, or ALTER DATABASE ... SET timezone = 'UTC')"
            ),
        ));
    }
    let meaning = if server_utc {
        "CURRENT_TIMESTAMP defaults in user_sessions hold UTC".to_owned()
    } else {
        "a client that sets no zone gets the server's, so user_sessions' CURRENT_TIMESTAMP defaults and now()::timestamp are local time there: the web app must write UTC itself (the worker always does)".to_owned()
    };
    Ok(Check::pass(
        SUBJECT,
        format!(
            "the worker's session {}, the server's default {server}; {meaning}",
            zones.session
        ),
    ))
}
