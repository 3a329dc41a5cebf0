//! A TCP proxy in front of Redis for one process, so a test can cut that process
//! off (a network partition) while Redis stays up for everyone else.
//!
//! While partitioned, the proxy still accepts bytes but forwards nothing either
//! way, as a link that silently drops packets does; the bytes it holds go through
//! once the partition heals, so a command sent during it runs late, as it would
//! after a real partition that TCP rides out.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    port: u16,
    partitioned: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let partitioned = Arc::new(watch::Sender::new(false));
        let state = partitioned.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, state.subscribe()));
                tokio::spawn(pump(server_read, client_write, state.subscribe()));
            }
        });
        Self { port, partitioned }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding in both directions; connections stay open.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Forwards again, starting with whatever arrived during the partition.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

/// Copies `from` to `to`, holding every chunk while the link is partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        while *partitioned.borrow_and_update() {
            match tokio::time::timeout(Duration::from_secs(3600), partitioned.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
