//! The accept loop: our own rather than `axum::serve`, which gives hyper no
//! timer, so that hyper's header read timeout never fires and a connection
//! that sends half a head stays open for ever. The shape (a watch channel to
//! tell connections to finish, another to wait for them) is axum's own.
//!
//! What a caller can make the process hold is bounded here: connections (at
//! most [`MAX_CONNECTIONS`]; past that, new ones wait in the kernel's accept
//! queue), a request head (at most [`MAX_HEAD_BYTES`] buffered, whole within
//! [`HEADER_TIMEOUT`], also between requests on a kept-alive connection), and
//! with the router's body deadline and the webhook's body budget, bodies.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::quiet;
use crate::stats;

/// A connection that has not sent a whole request head this long after it
/// opened (or after its previous answer) is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections at most. Each costs a few KB while idle; Render's
/// instances allow far more file descriptors than this.
pub const MAX_CONNECTIONS: usize = 4096;

/// hyper's read buffer per connection (its default is about 400 KB): the
/// largest request head accepted. Stripe's heads are under 2 KB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    // Dropped receiver = "finish now"; the connections hold `close_rx`
    // clones, and `close_tx.closed()` is when the last one ended.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());

    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            () = signal_tx.closed() => break,
        };
        if slots.available_permits() == 0
            && let Some(left_out) = quiet::REFUSALS.admit()
        {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                left_out,
                "connection limit reached; new connections wait"
            );
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        // Answers are written whole; waiting to coalesce them only adds delay.
        let _ = stream.set_nodelay(true);
        stats::connections_open(MAX_CONNECTIONS - slots.available_permits());

        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (signal_tx, close_rx, slots) = (signal_tx.clone(), close_rx.clone(), slots.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut finish = std::pin::pin!(signal_tx.closed());
            let mut finishing = false;
            let served = loop {
                tokio::select! {
                    served = connection.as_mut() => break served,
                    () = &mut finish, if !finishing => {
                        finishing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(error) = served
                && error.is_timeout()
            {
                stats::header_timeout();
            }
            drop(slot);
            stats::connections_open(MAX_CONNECTIONS - slots.available_permits());
            drop(close_rx);
        });
    }

    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
    Ok(())
}

/// As axum does: errors of one connection (reset before it was accepted) are
/// nothing; others (out of file descriptors) are logged, and accepting
/// pauses, so that the loop does not spin.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    if let Some(left_out) = quiet::REFUSALS.admit() {
        tracing::error!(%error, left_out, "accepting a connection failed; pausing");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
