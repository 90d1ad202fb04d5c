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
//! demand, and closed after ten idle minutes or thirty minutes of life, by
//! a task that looks at the idle ones every 30 s, not only when they are
//! next asked for.
//!
//! Every exchange is bounded on the client's side: the check within
//! [`PING_TIMEOUT`] (a connection that does not answer it is dropped and the
//! next one tried), the statement within [`super::limit::CALL_TIMEOUT`] (the
//! caller's), a close within [`CLOSE_TIMEOUT`].

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Error};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ACQUIRE_TIMEOUT;

/// Idle at least this long, a connection is pinged before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// A check that takes longer finds a connection that stopped answering (a
/// partition without a reset): it is dropped, and another one tried, within
/// [`ACQUIRE_TIMEOUT`].
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// sqlx's defaults for its pool.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How often idle connections are looked at, at most.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// A polite close (the Terminate message) to a server that no longer
/// answers must not hold anything for long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Connections {
    options: PgConnectOptions,
    max: u32,
    /// One permit per connection that may be open.
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
}

struct Idle {
    connection: PgConnection,
    opened: Instant,
    since: Instant,
}

impl Idle {
    fn expired(&self, idle_timeout: Duration) -> bool {
        self.since.elapsed() >= idle_timeout || self.opened.elapsed() >= MAX_LIFETIME
    }
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
    /// At most `max` connections, idle ones closed after `idle_timeout` by
    /// a task that ends with the last handle (or on [`Connections::close`]).
    pub(super) fn start(options: PgConnectOptions, max: u32, idle_timeout: Duration) -> Arc<Self> {
        let connections = Arc::new(Self {
            options,
            max,
            permits: Semaphore::new(max as usize),
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        });
        // Built outside a runtime (never, in the worker), nothing is reaped
        // but on use, as before.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&connections)));
        }
        connections
    }

    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// A live connection within [`ACQUIRE_TIMEOUT`], else
    /// [`Error::PoolTimedOut`] (as sqlx's pool answers).
    pub(super) async fn acquire(&self) -> Result<Lease<'_>, Error> {
        within_timeout(async {
            let permit = self.permit().await?;
            while let Some(mut idle) = self.pop_idle() {
                if idle.expired(self.idle_timeout) {
                    tokio::spawn(close(idle.connection));
                    continue;
                }
                let unchecked = idle.since.elapsed() < CHECK_AFTER_IDLE;
                if !unchecked {
                    let check = tokio::time::timeout(PING_TIMEOUT, idle.connection.ping()).await;
                    if !matches!(check, Ok(Ok(()))) {
                        // Gone, or silent, while idle: dropped (never
                        // closed politely: it may not answer); the next
                        // one, or a new one.
                        continue;
                    }
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
            close(idle.connection).await;
        }
    }

    /// Takes out the idle connections past their idle time or lifetime.
    fn expired(&self) -> Vec<PgConnection> {
        let mut idle = self.idle.lock().expect("never poisoned");
        let (expired, kept) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|idle| idle.expired(self.idle_timeout));
        *idle = kept;
        expired.into_iter().map(|idle| idle.connection).collect()
    }
}

/// Closes idle connections past their time until `connections` is gone or
/// closed.
async fn reap(connections: Weak<Connections>) {
    let period = match connections.upgrade() {
        Some(connections) => (connections.idle_timeout / 2).min(REAP_EVERY),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        if connections.permits.is_closed() {
            return;
        }
        let expired = connections.expired();
        // Not holding the last handle while closing.
        drop(connections);
        for connection in expired {
            close(connection).await;
        }
    }
}

/// Closes `connection` politely, within [`CLOSE_TIMEOUT`]: past it, the
/// connection is dropped, which closes its socket all the same.
async fn close(connection: PgConnection) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
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
            tokio::spawn(close(connection));
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
