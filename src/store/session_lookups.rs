//! `GET /sessions/{id}` in batches. Every page view of the web app is one
//! such read, so they come many at a time; one statement for the ids that
//! arrived together costs the database about what one id costs alone (a
//! round trip, a plan, a transaction), which is what makes the API keep up
//! with the same SELECT sent straight to PostgreSQL.
//!
//! Nothing waits to fill a batch: the reader takes the next id as soon as
//! it arrives, plus whatever queued behind it while it was busy.
//! An id read alone goes out at once; under load, batches grow by
//! themselves to the number of requests that arrived during one query.

use futures_util::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use super::CHECK_AFTER_IDLE;
use super::connections::{IDLE_TIMEOUT, MAX_LIFETIME, connection_lost};
use super::limit;
use super::sessions::{SessionRow, session_columns};
use crate::sessions::metrics::{ReadWaiting, read_batch};

/// Ids per statement at most: past a few dozen, a bigger batch saves
/// nothing and only delays the first answer in it.
const MAX_BATCH: usize = 64;

/// A batch's statement, connecting included, within this: a keyed read of
/// 64 rows takes milliseconds, and with one reader a connection that
/// stopped answering (a partition without a reset) must hold every read up
/// for as short a time as can be told from a slow database. The connection
/// is then closed, and the next batch opens another.
const READ_LIMIT: Duration = Duration::from_secs(2);

/// The check of a connection idle past [`CHECK_AFTER_IDLE`], at most: a
/// ping is one round trip, and the rest of [`READ_LIMIT`] is left for a
/// new connection and the batch's read when the old one stopped answering
/// (a partition without a reset). Half the webhook's ping limit: a batch
/// has 2 s in all, where the webhook's acquire has 3.
const PING_LIMIT: Duration = Duration::from_millis(500);

/// Requests waiting for a reader at most; past it, a request waits to be
/// queued (each one is still bounded by [`limit::CALL_TIMEOUT`]).
const QUEUE: usize = 1024;

const LOAD_MANY: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM user_sessions \
     WHERE session_id = ANY($1) AND is_active AND expires_at > (now() AT TIME ZONE 'UTC')"
);

type Answer = Result<Option<SessionRow>, sqlx::Error>;

struct Lookup {
    session_id: String,
    answer: oneshot::Sender<Answer>,
}

/// The queue the reader takes ids from; the reader ends with the last
/// clone of it.
#[derive(Clone)]
pub(super) struct Lookups {
    queue: mpsc::Sender<Lookup>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
}

impl Lookups {
    /// Starts the reader on the current runtime, with a connection of its
    /// own to `pool`'s database (opened on first use): no wait behind a
    /// purge or the API's writes, and a generic plan for its statement.
    /// PostgreSQL plans `= ANY($1)` again on every execution otherwise: it
    /// costs the generic plan for 10 ids, so a batch of 5 always looks
    /// cheaper planned anew (`pg_prepared_statements`: 0 generic plans
    /// after 9 executions). The generic plan is the same index scan.
    pub(super) fn start(pool: &PgPool) -> Self {
        let options = super::session_options((*pool.connect_options()).clone())
            .options([("plan_cache_mode", "force_generic_plan")])
            // A statement per batch, tens of thousands a second: sqlx's
            // per-statement log is never wanted here.
            .disable_statement_logging();
        let (queue, arrivals) = mpsc::channel(QUEUE);
        tokio::spawn(read(Reader::new(options), arrivals));
        Self { queue }
    }

    /// A live session, read only, within [`limit::CALL_TIMEOUT`] from now
    /// (queueing included).
    pub(super) async fn load(&self, session_id: &str) -> Answer {
        let _waiting = ReadWaiting::start();
        limit::within(async {
            let (answer, answered) = oneshot::channel();
            let lookup = Lookup {
                session_id: session_id.to_owned(),
                answer,
            };
            self.queue
                .send(lookup)
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            answered.await.map_err(|_| sqlx::Error::PoolClosed)?
        })
        .await
    }
}

/// The reader: the next batch, its query, its answers; until the queue's
/// senders are all gone.
///
/// One reader, so one query in flight: measured on 2 cores at 16
/// connections (BENCHMARKS.md), one reader served 19,000 reads/s in
/// batches of 5.5, two 15,000 in batches of 3.6, three 15,000. While its
/// query runs the next batch gathers, and a bigger batch is cheaper per
/// read. And one reader needs one connection.
async fn read(mut reader: Reader, mut arrivals: mpsc::Receiver<Lookup>) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if arrivals.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // A request that gave up (its client left, its time ran out) is not
        // looked up.
        batch.retain(|lookup| !lookup.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Were anything in a batch to panic, its requests fail (their
        // answers dropped: 503), not every later read; the connection, in
        // an unknown state, goes with them.
        if AssertUnwindSafe(reader.answer(batch))
            .catch_unwind()
            .await
            .is_err()
        {
            reader.connection = None;
        }
    }
}

/// The reader's connection, its own (not a pool's): nothing to acquire or
/// give back per batch. It is looked after as a pool would: checked after
/// being idle, replaced when old, closed after a failure.
struct Reader {
    options: PgConnectOptions,
    /// Opened by the first batch that needs it; closed after any failure
    /// but the server's refusal of a statement, so that a connection whose
    /// call ran out of time (its server may still answer that call later)
    /// or that the server ended is never read again.
    connection: Option<Open>,
}

struct Open {
    connection: PgConnection,
    opened: Instant,
    used: Instant,
}

impl Reader {
    fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            connection: None,
        }
    }

    async fn answer(&mut self, batch: Vec<Lookup>) {
        match self.query(&batch).await {
            // A statement refused for what one id holds (a data exception)
            // would fail every read of the batch: each is read alone, so
            // that only its own fails. (The handlers refuse the ids they
            // know to be impossible before they get here.) Once one fails
            // for another reason, the rest fail with it rather than each
            // waiting its own limit on a database gone silent.
            Err(sqlx::Error::Database(error))
                if batch.len() > 1 && error.code().is_some_and(|code| code.starts_with("22")) =>
            {
                let mut failed = None;
                for lookup in batch {
                    if lookup.answer.is_closed() {
                        continue;
                    }
                    let found = match &failed {
                        Some(error) => Err(copy_of(error)),
                        None => self.query(std::slice::from_ref(&lookup)).await,
                    };
                    if let Err(error) = &found
                        && !matches!(error, sqlx::Error::Database(_))
                    {
                        failed = Some(copy_of(error));
                    }
                    deliver(vec![lookup], found);
                }
            }
            found => deliver(batch, found),
        }
    }

    /// One statement for the batch's ids, within [`READ_LIMIT`] (a check of
    /// the connection, a new one, and one more try included).
    async fn query(&mut self, batch: &[Lookup]) -> Result<Vec<SessionRow>, sqlx::Error> {
        let ids: Vec<&str> = batch.iter().map(|l| l.session_id.as_str()).collect();
        read_batch(ids.len());
        let found = limit::within_limit(READ_LIMIT, self.fetch_retrying(&ids)).await;
        if let Err(error) = &found
            && (connection_lost(error) || !matches!(error, sqlx::Error::Database(_)))
        {
            self.connection = None;
        }
        found
    }

    /// A connection used a moment ago is taken unchecked (a check per
    /// batch would double its round trips); one the server has ended since
    /// fails at once, and the batch goes again on a new one.
    async fn fetch_retrying(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, sqlx::Error> {
        let unchecked = self.ready().await?;
        match self.fetch(ids).await {
            Err(error) if unchecked && connection_lost(&error) => {
                self.connection = None;
                self.ready().await?;
                self.fetch(ids).await
            }
            found => found,
        }
    }

    /// Makes sure there is a connection to use: the one there is, unless
    /// it is past its life ([`MAX_LIFETIME`]) or was idle past
    /// [`IDLE_TIMEOUT`]; checked with a ping when idle past
    /// [`CHECK_AFTER_IDLE`] (a restart, a failover or the server's
    /// `idle_session_timeout` may have ended it); else a new one. The ping
    /// has [`PING_LIMIT`], as the webhook's connections have theirs: one that
    /// stopped answering (a partition without a reset) would otherwise take
    /// all of [`READ_LIMIT`], and fail the batch, before a new one is
    /// tried. Answers whether it is a used connection taken unchecked.
    async fn ready(&mut self) -> Result<bool, sqlx::Error> {
        if let Some(open) = &mut self.connection {
            let idle = open.used.elapsed();
            if open.opened.elapsed() < MAX_LIFETIME && idle < IDLE_TIMEOUT {
                if idle < CHECK_AFTER_IDLE {
                    return Ok(true);
                }
                let check = tokio::time::timeout(PING_LIMIT, open.connection.ping()).await;
                if matches!(check, Ok(Ok(()))) {
                    return Ok(false);
                }
            }
        }
        self.connection = None;
        let connection = PgConnection::connect_with(&self.options).await?;
        let now = Instant::now();
        self.connection = Some(Open {
            connection,
            opened: now,
            used: now,
        });
        Ok(false)
    }

    async fn fetch(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, sqlx::Error> {
        let open = self.connection.as_mut().expect("ready() opened one");
        let rows = sqlx::query_as(LOAD_MANY)
            .bind(ids)
            .fetch_all(&mut open.connection)
            .await?;
        open.used = Instant::now();
        Ok(rows)
    }
}

fn deliver(batch: Vec<Lookup>, found: Result<Vec<SessionRow>, sqlx::Error>) {
    match found {
        Ok(rows) => {
            let by_id: HashMap<String, SessionRow> = rows
                .into_iter()
                .map(|row| (row.session_id.clone(), row))
                .collect();
            for lookup in batch {
                // The same id twice in one batch: each gets its copy.
                let row = by_id.get(&lookup.session_id).cloned();
                let _ = lookup.answer.send(Ok(row));
            }
        }
        Err(error) => {
            for lookup in batch {
                let _ = lookup.answer.send(Err(copy_of(&error)));
            }
        }
    }
}

/// The batch's error, for each of its requests: the same kind (what the
/// handler answers by), the same text.
fn copy_of(error: &sqlx::Error) -> sqlx::Error {
    match error {
        // A connection the server ended answers as one cut (503), not as
        // a failed statement (500).
        sqlx::Error::Database(_) if connection_lost(error) => sqlx::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            error.to_string(),
        )),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(io::Error::new(io.kind(), io.to_string())),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_error_keeps_the_kind_the_handler_answers_by() {
        let timed_out = copy_of(&limit::timed_out(limit::CALL_TIMEOUT));
        assert!(
            matches!(&timed_out, sqlx::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut),
            "{timed_out:?}"
        );
        assert!(matches!(
            copy_of(&sqlx::Error::PoolTimedOut),
            sqlx::Error::PoolTimedOut
        ));
        assert!(matches!(
            copy_of(&sqlx::Error::PoolClosed),
            sqlx::Error::PoolClosed
        ));
        let other = copy_of(&sqlx::Error::RowNotFound);
        assert!(matches!(&other, sqlx::Error::Protocol(text) if text.contains("no rows")));
    }
}
