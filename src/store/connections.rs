//! The webhook path's database connections: reused as they are while busy.
//!
//! sqlx's pool checks a connection with a round trip to the server (a ping)
//! when it hands it out, and again when it takes it back. Applying an event is
//! one round trip itself, so under load two thirds of the worker's exchanges
//! with the server were these checks (BENCHMARKS.md has the figures).
//!
//! Here a connection goes back as it is after a statement that ran to its end
//! (each event is one statement, run on a task of its own that nothing
//! cancels, so the connection is ready for the next one), and is dropped
//! after any error or when the task is dropped mid-way. It is checked with a
//! ping, as sqlx does, when it has been idle for a second or more: a server
//! restarted or a connection cut by the network meanwhile is found out before
//! use, as before. A busy connection is not checked again; if the server
//! ended it within that second, the caller finds out from the error and tries
//! once more on a new connection ([`Lease::unchecked`], [`connection_lost`],
//! [`Connections::open`]). Like sqlx's pool, connections are opened on
//! demand, and closed after ten idle minutes or thirty minutes of life.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Error};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ACQUIRE_TIMEOUT;

/// Idle at least this long, a connection is pinged before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// sqlx's defaults for its pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub(super) struct Connections {
    options: PgConnectOptions,
    /// One permit per connection that may be open.
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    connection: PgConnection,
    opened: Instant,
    since: Instant,
}

/// A connection lent out; it goes back only through [`Lease::release`].
pub(super) struct Lease<'a> {
    connection: PgConnection,
    opened: Instant,
    /// Reused without a round trip to check it.
    unchecked: bool,
    owner: &'a Connections,
    _permit: SemaphorePermit<'a>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Connections {
    pub(super) fn new(options: PgConnectOptions, max_connections: u32) -> Self {
        Self {
            options,
            permits: Semaphore::new(max_connections as usize),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A live connection within [`ACQUIRE_TIMEOUT`], else
    /// [`Error::PoolTimedOut`] (as sqlx's pool answers).
    pub(super) async fn acquire(&self) -> Result<Lease<'_>, Error> {
        within_timeout(async {
            let permit = self.permit().await?;
            while let Some(mut idle) = self.pop_idle() {
                if idle.since.elapsed() >= IDLE_TIMEOUT || idle.opened.elapsed() >= MAX_LIFETIME {
                    tokio::spawn(idle.connection.close());
                    continue;
                }
                let unchecked = idle.since.elapsed() < CHECK_AFTER_IDLE;
                if !unchecked && idle.connection.ping().await.is_err() {
                    // Gone while idle: dropped; the next one, or a new one.
                    continue;
                }
                return Ok(Lease {
                    connection: idle.connection,
                    opened: idle.opened,
                    unchecked,
                    owner: self,
                    _permit: permit,
                });
            }
            self.connect(permit).await
        })
        .await
    }

    /// A new connection within [`ACQUIRE_TIMEOUT`], never an idle one.
    pub(super) async fn open(&self) -> Result<Lease<'_>, Error> {
        within_timeout(async {
            let permit = self.permit().await?;
            self.connect(permit).await
        })
        .await
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, Error> {
        self.permits.acquire().await.map_err(|_| Error::PoolClosed)
    }

    async fn connect<'a>(&'a self, permit: SemaphorePermit<'a>) -> Result<Lease<'a>, Error> {
        let connection = PgConnection::connect_with(&self.options).await?;
        Ok(Lease {
            connection,
            opened: Instant::now(),
            unchecked: false,
            owner: self,
            _permit: permit,
        })
    }

    fn pop_idle(&self) -> Option<Idle> {
        // Last in, first out: the connections in use stay few and warm.
        self.idle.lock().expect("never poisoned").pop()
    }

    /// Refuses new work and closes the idle connections (on shutdown).
    pub(super) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().expect("never poisoned"));
        for idle in idle {
            let _ = idle.connection.close().await;
        }
    }
}

async fn within_timeout<'a>(
    acquire: impl Future<Output = Result<Lease<'a>, Error>>,
) -> Result<Lease<'a>, Error> {
    tokio::time::timeout(ACQUIRE_TIMEOUT, acquire)
        .await
        .map_err(|_| Error::PoolTimedOut)?
}

impl Lease<'_> {
    pub(super) fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// Whether the connection was reused without a check: an error that says
    /// the connection is gone may then only mean that the server ended it
    /// since its last use, and the work can be tried on a new one.
    pub(super) fn unchecked(&self) -> bool {
        self.unchecked
    }

    /// Puts the connection back for the next event. Only after a statement
    /// that completed; a lease dropped instead closes its connection.
    pub(super) fn release(self) {
        let Lease {
            connection,
            opened,
            owner,
            _permit,
            ..
        } = self;
        if owner.permits.is_closed() {
            tokio::spawn(connection.close());
            return;
        }
        owner.idle.lock().expect("never poisoned").push(Idle {
            connection,
            opened,
            since: Instant::now(),
        });
        // `_permit` goes last, once the connection is back for the next one.
    }
}

/// Whether `error` says that the connection is gone, rather than that the
/// statement failed: an I/O error, a connection exception (SQLSTATE class
/// 08), or the server ending the session (57P01 admin_shutdown, 57P02
/// crash_shutdown, 57P03 cannot_connect_now, 57P05 idle_session_timeout).
pub(super) fn connection_lost(error: &Error) -> bool {
    match error {
        Error::Io(_) => true,
        Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_told_from_a_failed_statement() {
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_lost(&io));
        assert!(!connection_lost(&Error::PoolTimedOut));
        assert!(!connection_lost(&Error::RowNotFound));
    }
}
