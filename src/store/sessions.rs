//! The session API's SQL. A session is live while `is_active` and
//! `expires_at > now()`; anything else is, to the API, not there at all.
//! Times are UTC in `TIMESTAMP` columns, as the web app writes them.

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::{Connection, PgConnection, PgPool};

use super::limit::{self, Armed};
use super::session_lookups::Lookups;

/// `$call` (a query run on the connection `$conn`) within
/// [`limit::CALL_TIMEOUT`], on an [`Armed`] connection: the session API is
/// on the request path, and a call cut short (a client that hangs up, a
/// database that stopped answering) must close its connection rather than
/// hand it back to a pool whose release ping may hang.
macro_rules! bounded {
    ($pool:expr, |$conn:ident| $call:expr) => {
        limit::within(async {
            let mut armed = Armed::acquire($pool).await?;
            let $conn = armed.connection();
            let answer = $call.await?;
            armed.done();
            Ok(answer)
        })
        .await
    };
}

/// A session as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: String,
    pub username: String,
    pub session_data: Option<String>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub expires_at: NaiveDateTime,
}

/// What `sessions stats` prints.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionStats {
    pub active: i64,
    pub users: i64,
    pub users_with_several: i64,
    /// `None` with no active session.
    pub median_age_secs: Option<f64>,
}

const LIVE: &str = "is_active AND expires_at > (now() AT TIME ZONE 'UTC')";

/// "Now" in UTC, whatever the connection's TimeZone.
const NOW: &str = "(now() AT TIME ZONE 'UTC')";

/// The columns of a [`SessionRow`], its times [`within_chrono`]: the
/// `SELECT` or `RETURNING` list of every statement that answers sessions,
/// the batched reads' included, so that none decodes a time unclamped.
macro_rules! session_columns {
    () => {
        concat!(
            "session_id, username, session_data, ",
            $crate::store::within_chrono!("created_at"),
            " AS created_at, ",
            $crate::store::within_chrono!("updated_at"),
            " AS updated_at, ",
            $crate::store::within_chrono!("expires_at"),
            " AS expires_at"
        )
    };
}
pub(super) use session_columns;

const COLUMNS: &str = session_columns!();

#[derive(Clone, Debug)]
pub struct SessionStore {
    pool: PgPool,
    lookups: Lookups,
}

impl SessionStore {
    /// Starts the readers of [`SessionStore::load`] on the current runtime.
    pub fn new(pool: PgPool) -> Self {
        Self {
            lookups: Lookups::start(&pool),
            pool,
        }
    }

    /// Inserts a session whose data is `members` (the inner text of the
    /// app's object) plus the user's subscription keys, in one statement
    /// that serialises with the webhook on the user's lock.
    pub async fn create(
        &self,
        session_id: &str,
        username: &str,
        members: &str,
        lifetime: Duration,
        record_lifetime: bool,
    ) -> Result<SessionRow, sqlx::Error> {
        // The row as inserted, which a trigger of the web app's may have
        // changed.
        let query = format!(
            "SELECT {COLUMNS} FROM ( \
                 SELECT $1::text AS session_id, $2::text AS username, \
                        o_session_data AS session_data, o_created_at AS created_at, \
                        o_updated_at AS updated_at, o_expires_at AS expires_at \
                 FROM sw_session_create($1, $2, $3, $4, $5)) AS created"
        );
        bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(session_id)
                .bind(username)
                .bind(members)
                .bind(secs(lifetime))
                .bind(record_lifetime)
                .fetch_one(conn)
        })
    }

    /// A live session, read only; read in a batch with the other loads of
    /// the moment (`session_lookups`).
    pub async fn load(&self, session_id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        self.lookups.load(session_id).await
    }

    /// A live session, its expiry moved to now + its lifetime when it was
    /// last set more than `interval` ago (`expires_at - lifetime` is when
    /// that was, since it is always set to then + lifetime). The condition is
    /// on the row being updated, so two GETs at once write once.
    pub async fn load_touching(
        &self,
        session_id: &str,
        default_lifetime: Duration,
        interval: Duration,
    ) -> Result<Option<SessionRow>, sqlx::Error> {
        let query = format!(
            "WITH found AS ( \
                 SELECT u.id, u.session_id, u.username, u.session_data, u.created_at, u.updated_at, \
                        u.expires_at, make_interval(secs => COALESCE(l.lifetime_secs, $2)) AS lifetime \
                 FROM user_sessions u \
                 LEFT JOIN sw_session_lifetimes l ON l.session_row_id = u.id \
                 WHERE u.session_id = $1 AND u.is_active AND u.expires_at > {NOW} \
             ), touched AS ( \
                 UPDATE user_sessions u \
                 SET expires_at = {NOW} + f.lifetime \
                 FROM found f \
                 WHERE u.id = f.id AND u.is_active AND u.expires_at > {NOW} \
                   AND u.expires_at - f.lifetime < {NOW} - make_interval(secs => $3) \
                 RETURNING u.id, u.expires_at \
             ) \
             SELECT {COLUMNS} FROM ( \
                 SELECT f.session_id, f.username, f.session_data, f.created_at, f.updated_at, \
                        COALESCE(t.expires_at, f.expires_at) AS expires_at \
                 FROM found f LEFT JOIN touched t ON t.id = f.id) AS answered"
        );
        bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(session_id)
                .bind(secs(default_lifetime))
                .bind(secs(interval))
                .fetch_optional(conn)
        })
    }

    /// Reads a live session's data with its row locked, lets `edit` compute
    /// the new text, and writes it. `None`: no live session; `Some(Err)`:
    /// `edit` refused, nothing written.
    pub async fn update_data<E>(
        &self,
        session_id: &str,
        edit: impl FnOnce(Option<&str>) -> Result<String, E>,
    ) -> Result<Option<Result<SessionRow, E>>, sqlx::Error> {
        bounded!(&self.pool, |conn| update_on(conn, session_id, edit))
    }

    /// Ends a live session; returns how long it had lived.
    pub async fn end(&self, session_id: &str) -> Result<Option<Duration>, sqlx::Error> {
        let query = format!(
            "UPDATE user_sessions SET is_active = FALSE, updated_at = (now() AT TIME ZONE 'UTC') \
             WHERE session_id = $1 AND {LIVE} RETURNING {LIVED}"
        );
        let lived: Option<(f64,)> = bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(session_id)
                .fetch_optional(conn)
        })?;
        Ok(lived.map(|(secs,)| duration(secs)))
    }

    /// A user's live sessions, newest first.
    pub async fn list(&self, username: &str) -> Result<Vec<SessionRow>, sqlx::Error> {
        let query = format!(
            "SELECT {COLUMNS} FROM user_sessions WHERE username = $1 AND {LIVE} \
             ORDER BY user_sessions.created_at DESC NULLS LAST, id DESC"
        );
        bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(username)
                .fetch_all(conn)
        })
    }

    /// Ends a user's live sessions but `except`; returns how long each had
    /// lived.
    pub async fn revoke(
        &self,
        username: &str,
        except: Option<&str>,
    ) -> Result<Vec<Duration>, sqlx::Error> {
        // The rows are locked in id order first, the order the webhook's
        // refresh of a user's sessions locks them in: a plain UPDATE locks
        // them in scan order, and the two could deadlock.
        let query = format!(
            "WITH doomed AS ( \
                 SELECT id FROM user_sessions \
                 WHERE username = $1 AND {LIVE} AND session_id IS DISTINCT FROM $2 \
                 ORDER BY id FOR UPDATE) \
             UPDATE user_sessions u SET is_active = FALSE, updated_at = (now() AT TIME ZONE 'UTC') \
             FROM doomed d WHERE u.id = d.id AND {LIVE} RETURNING {LIVED}"
        );
        let lived: Vec<(f64,)> = bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(username)
                .bind(except)
                .fetch_all(conn)
        })?;
        Ok(lived.into_iter().map(|(secs,)| duration(secs)).collect())
    }

    /// Live sessions, for the gauge; also forgets the lifetimes of sessions
    /// the purge (or the app) has deleted.
    pub async fn count_live(&self) -> Result<i64, sqlx::Error> {
        bounded!(&self.pool, |conn| {
            sqlx::query(
                "DELETE FROM sw_session_lifetimes l \
                 WHERE NOT EXISTS (SELECT 1 FROM user_sessions u WHERE u.id = l.session_row_id)",
            )
            .execute(conn)
        })?;
        let query = format!("SELECT count(*) FROM user_sessions WHERE {LIVE}");
        bounded!(&self.pool, |conn| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(query)).fetch_one(conn)
        })
    }

    pub async fn stats(&self) -> Result<SessionStats, sqlx::Error> {
        // Clamped: PostgreSQL before 17 refuses to subtract an infinite
        // timestamp.
        let created_at = within_chrono!("created_at");
        let query = format!(
            "WITH live AS ( \
                 SELECT username, extract(epoch FROM {NOW} - {created_at})::float8 AS age \
                 FROM user_sessions WHERE {LIVE} \
             ), per_user AS (SELECT count(*) AS n FROM live GROUP BY username) \
             SELECT (SELECT count(*) FROM live) AS active, \
                    (SELECT count(*) FROM per_user) AS users, \
                    (SELECT count(*) FROM per_user WHERE n > 1) AS users_with_several, \
                    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM live) AS median_age_secs"
        );
        bounded!(&self.pool, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(query)).fetch_one(conn)
        })
    }
}

/// Seconds a session had lived when it ended (0 when the app left
/// `created_at` empty). Clamped: PostgreSQL before 17 refuses to subtract
/// an infinite timestamp, and the infinite age a later one answers would
/// panic `Duration::from_secs_f64`.
const LIVED: &str = concat!(
    "COALESCE(extract(epoch FROM (now() AT TIME ZONE 'UTC') - ",
    within_chrono!("created_at"),
    "), 0)::float8"
);

fn secs(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn duration(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.max(0.0))
}

/// [`SessionStore::update_data`] on one connection, in one transaction.
async fn update_on<E>(
    conn: &mut PgConnection,
    session_id: &str,
    edit: impl FnOnce(Option<&str>) -> Result<String, E>,
) -> Result<Option<Result<SessionRow, E>>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let current: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT session_data FROM user_sessions WHERE session_id = $1 AND {LIVE} FOR UPDATE"
    )))
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    // Rolled back here, not on drop: a rollback left for later would be
    // sent by the pool's release ping, outside any limit.
    let Some((current,)) = current else {
        tx.rollback().await?;
        return Ok(None);
    };
    let data = match edit(current.as_deref()) {
        Ok(data) => data,
        Err(refused) => {
            tx.rollback().await?;
            return Ok(Some(Err(refused)));
        }
    };
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE user_sessions SET session_data = $2, updated_at = (now() AT TIME ZONE 'UTC') \
         WHERE session_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(session_id)
    .bind(data)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Ok(row)))
}
