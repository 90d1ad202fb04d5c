//! A TCP proxy to PostgreSQL that can turn into a black hole: every
//! connection it carries stops forwarding without being closed (a network
//! partition without a reset), and new ones are accepted and never
//! answered. Healed, it forwards new connections again; the swallowed ones
//! stay silent for good, as after a real partition. It binds port 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Blackhole {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

struct State {
    /// Cancelled when the links of this epoch are swallowed.
    epoch: CancellationToken,
    swallowing: bool,
    /// Sockets held open, never read or written again: the worker's side,
    /// and the server's.
    swallowed: Vec<TcpStream>,
    upstream: Vec<TcpStream>,
}

impl Blackhole {
    pub async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            epoch: CancellationToken::new(),
            swallowing: false,
            swallowed: Vec::new(),
            upstream: Vec::new(),
        }));
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (epoch, swallowing) = {
                        let state = state.lock().unwrap();
                        (state.epoch.clone(), state.swallowing)
                    };
                    if swallowing {
                        state.lock().unwrap().swallowed.push(client);
                        continue;
                    }
                    tokio::spawn(link(client, upstream, epoch, state.clone()));
                }
            }
        });
        Self {
            address,
            state,
            accept,
        }
    }

    /// Every link stops forwarding, silently; new ones are never answered.
    pub fn swallow(&self) {
        let mut state = self.state.lock().unwrap();
        state.swallowing = true;
        state.epoch.cancel();
    }

    /// The server ends the sessions it can no longer reach, as its TCP
    /// keepalive does after a while (their locks go with them); the worker's
    /// side stays silent.
    pub fn server_ends_swallowed_sessions(&self) {
        self.state.lock().unwrap().upstream.clear();
    }

    /// New connections are forwarded again.
    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.swallowing = false;
        state.epoch = CancellationToken::new();
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn link(
    mut client: TcpStream,
    upstream: SocketAddr,
    epoch: CancellationToken,
    state: Arc<Mutex<State>>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = epoch.cancelled() => {
            let mut state = state.lock().unwrap();
            state.swallowed.push(client);
            state.upstream.push(server);
        }
    }
}
