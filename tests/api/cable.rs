//! A cable to PostgreSQL that tests can pull out and plug back in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new
/// ones closed at once) and restored.
///
/// It listens on its port for its whole life: a port let go while cut could
/// be taken by any other test (or by an outgoing connection) before the
/// restore binds it again. So while cut it accepts and closes at once, which
/// a client sees as a server that is down: its connection fails at the start.
pub struct Cable {
    pub address: SocketAddr,
    links: Arc<Mutex<Links>>,
    accepting: JoinHandle<()>,
}

struct Links {
    plugged: bool,
    live: JoinSet<()>,
}

impl Cable {
    pub async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let links = Arc::new(Mutex::new(Links {
            plugged: true,
            live: JoinSet::new(),
        }));
        let accepting = tokio::spawn({
            let links = links.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut links = links.lock().unwrap();
                    if !links.plugged {
                        continue; // `client` is dropped: closed at once.
                    }
                    links.live.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            address,
            links,
            accepting,
        }
    }

    /// Every link is dropped (both its sockets closed) before this returns.
    pub async fn cut(&mut self) {
        let mut live = {
            let mut links = self.links.lock().unwrap();
            links.plugged = false;
            std::mem::take(&mut links.live)
        };
        live.shutdown().await;
    }

    pub async fn restore(&mut self) {
        self.links.lock().unwrap().plugged = true;
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Where `pool`'s server listens.
pub fn server_of(pool: &PgPool) -> SocketAddr {
    let options = pool.connect_options();
    format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap()
}
