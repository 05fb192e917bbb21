//! A TCP fault proxy placed between a service and NATS or PostgreSQL: it forwards bytes both
//! ways until told to add latency, reset every connection, or blackhole the link (nothing
//! passes, nothing is refused: the peers see a silent network, as in a partition).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// What the link does right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Pass,
    /// Every chunk waits this long before it is forwarded, in both directions.
    Latency(Duration),
    /// Bytes are held (not dropped: TCP would retransmit them) until the link heals; new
    /// connections are accepted and then wait too.
    Blackhole,
}

struct Shared {
    upstream: SocketAddr,
    link: watch::Sender<Link>,
    /// Bumped to close every open connection at once (with a reset, not a clean close).
    resets: watch::Sender<u64>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { upstream, link: watch::channel(Link::Pass).0, resets: watch::channel(0).0 });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        Ok(Self { addr, shared, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, link: Link) {
        self.shared.link.send_replace(link);
    }

    /// Resets every open connection; the peers reconnect through the proxy.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.reset_all();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (client, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared.upstream).await else {
                // Upstream down: the client sees the connection close, as it would without us.
                return;
            };
            for socket in [&client, &server] {
                let _ = socket.set_nodelay(true);
                // A reset closes with RST, as a dropped route or a dead peer's kernel would.
                let _ = socket.set_zero_linger();
            }
            let mut resets = shared.resets.subscribe();
            resets.mark_unchanged();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(client_read, server_write, shared.link.subscribe());
            let down = pump(server_read, client_write, shared.link.subscribe());
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                _ = resets.changed() => {}
            }
        });
    }
}

/// Copies one direction, honouring the link's state before each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let state = *link.borrow_and_update();
            match state {
                Link::Pass => break,
                Link::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Link::Blackhole => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
