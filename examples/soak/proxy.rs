//! A TCP proxy in front of PostgreSQL (loopback only) that black-holes
//! connections, as a partition without a reset does (a lost NAT or firewall
//! mapping, a dead path): when the hole opens, every established connection
//! goes silent for good. Nothing it carries is delivered any more, in
//! either direction, and no close reaches the client; only the client can
//! end it, and its close reaches PostgreSQL once the hole has healed (so a
//! backend is not kept for ever by a connection its client dropped). New
//! connections made while the hole is open hang until it heals, then work.
//! So the worker must notice a silent connection itself (a client-side
//! limit on each call) and drop it: its TCP keepalives are answered by this
//! proxy's kernel, as by a middlebox's.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether the hole is open, and how many times it opened.
#[derive(Clone, Copy, Default)]
struct Hole {
    open: bool,
    opened: u64,
}

pub struct Proxy {
    pub port: u16,
    hole: watch::Sender<Hole>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (hole, _) = watch::channel(Hole::default());
        let watcher = hole.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(connection(client, upstream, watcher.clone()));
            }
        });
        Ok(Self { port, hole })
    }

    pub fn black_hole(&self, open: bool) {
        self.hole.send_modify(|hole| {
            if open && !hole.open {
                hole.opened += 1;
            }
            hole.open = open;
        });
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut hole: watch::Receiver<Hole>) {
    let born = healed(&mut hole).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // PostgreSQL is down: the client sees its connection closed.
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, hole.clone(), born, true),
        pump(server_read, client_write, hole, born, false),
    );
}

/// Copies one direction until its end; once the connection is caught in a
/// hole, what it reads is dropped. A close is passed on when the hole is
/// healed, except to a client whose connection is stuck (it hears nothing).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut hole: watch::Receiver<Hole>,
    born: u64,
    towards_server: bool,
) {
    let stuck = |hole: &watch::Receiver<Hole>| hole.borrow().opened > born;
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stuck(&hole) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    healed(&mut hole).await;
    if stuck(&hole) && !towards_server {
        // Keep the client's side open and silent: the client has to find
        // out by itself. Ends when the soak ends.
        std::future::pending::<()>().await;
    }
    let _ = to.shutdown().await;
}

/// Waits until the hole is closed; how many times it had opened by then.
async fn healed(hole: &mut watch::Receiver<Hole>) -> u64 {
    match hole.wait_for(|hole| !hole.open).await {
        Ok(hole) => hole.opened,
        Err(_) => 0,
    }
}
