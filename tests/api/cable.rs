//! A cable to PostgreSQL that tests can pull out and plug back in.

use std::net::SocketAddr;

use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new
/// ones refused) and restored on the same port.
pub struct Cable {
    pub address: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Cable {
    pub async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut cable = Self {
            address,
            upstream,
            task: None,
        };
        cable.connect_with(listener);
        cable
    }

    fn connect_with(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Aborting the task drops the listener and, with the JoinSet, every link.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.address).await.unwrap();
        self.connect_with(listener);
    }
}

/// Where `pool`'s server listens.
pub fn server_of(pool: &PgPool) -> SocketAddr {
    let options = pool.connect_options();
    format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap()
}
