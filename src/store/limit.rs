//! Client-side limits on database calls.
//!
//! `statement_timeout` is enforced by the server, so it does nothing when
//! the server no longer answers: a connection cut by a network partition
//! without a reset waits for the kernel's retransmission timeout (about 15
//! minutes on Linux) or for ever. sqlx 0.9 sets no TCP keepalive and offers
//! no hook to set one on its sockets, so every call of ours is bounded here
//! instead, and a connection whose call ran out of time is closed, never
//! reused: its server may still answer the old call later, and the next
//! user would read that answer.
//!
//! Dropping a call on a sqlx pool connection is not enough: the pool takes
//! the connection back by pinging it, with no time limit, on a task that
//! keeps the connection's slot until the ping ends. A pool connection used
//! under a limit is therefore held by an [`Armed`], which closes it (within
//! sqlx's 5 s close limit) unless the call ended.

use std::io;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// The longest a call of ours may take: the server's own `statement_timeout`
/// (5 s) answers first whenever the server is there to answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(6);

/// `call` within [`CALL_TIMEOUT`]; past it, an I/O error of kind
/// `TimedOut` (so that [`super::connections::connection_lost`] says so).
pub async fn within<T>(
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    within_limit(CALL_TIMEOUT, call).await
}

/// `call` within `limit`, as [`within`].
pub async fn within_limit<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| timed_out(limit))?
}

pub fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the database did not answer within {} ms",
            limit.as_millis()
        ),
    ))
}

/// A pool connection that goes back to the pool only through
/// [`Armed::done`]; dropped any other way (an error, a call cut short by a
/// limit), it is closed.
pub struct Armed {
    connection: PoolConnection<Postgres>,
    done: bool,
}

impl Armed {
    pub async fn acquire(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            connection: pool.acquire().await?,
            done: false,
        })
    }

    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// The call ended: the connection goes back to the pool.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if !self.done {
            self.connection.close_on_drop();
        }
    }
}
