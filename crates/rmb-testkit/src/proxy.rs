//! A TCP proxy that can simulate a network partition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{io, Result};

/// What the proxy does with traffic; every change bumps `epoch`.
#[derive(Debug, Clone, Copy)]
struct Mode {
    partitioned: bool,
    closed: bool,
    epoch: u64,
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    mode: watch::Sender<Mode>,
    forwarded: AtomicUsize,
    held: AtomicUsize,
    swallowed: AtomicUsize,
}

/// A loopback TCP proxy to one target that can be switched to a black hole, as a
/// network partition looks from both ends: connections are still accepted (so a
/// client's connect succeeds) but nothing is forwarded and nothing is answered.
///
/// - [`Proxy::partition`]: new connections are accepted and held, open ones freeze
///   mid-stream (bytes in flight are neither delivered nor answered);
/// - [`Proxy::heal`]: every connection held or frozen during the partition is closed
///   (as a partition that outlasted TCP's patience ends in resets) and new connections
///   are forwarded again.
///
/// A proxy bound without a target ([`Proxy::bind`]) starts partitioned, so its address
/// can be handed out (e.g. as a relay's domain) before the target exists.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &*self.shared.target.lock().unwrap())
            .field("partitioned", &self.is_partitioned())
            .finish()
    }
}

impl Proxy {
    /// A proxy on `ip` (any 127.0.0.x) and a free port, forwarding to `target`.
    pub async fn start(ip: &str, target: SocketAddr) -> Result<Self> {
        let proxy = Self::bind(ip).await?;
        proxy.set_target(target);
        proxy.heal();
        Ok(proxy)
    }

    /// A proxy on `ip` and a free port with no target yet: partitioned until
    /// [`Proxy::set_target`] and [`Proxy::heal`].
    pub async fn bind(ip: &str) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(io(format!("binding a proxy on {ip}")))?;
        let addr = listener.local_addr().map_err(io("proxy address"))?;
        let (mode, _) = watch::channel(Mode {
            partitioned: true,
            closed: false,
            epoch: 0,
        });
        let shared = Arc::new(Shared {
            target: Mutex::new(None),
            mode,
            forwarded: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            swallowed: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where traffic goes while not partitioned.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = Some(target);
    }

    /// Starts black-holing (no effect if already partitioned).
    pub fn partition(&self) {
        self.set_partitioned(true);
    }

    /// Closes what the partition held and forwards again (no effect if not partitioned).
    pub fn heal(&self) {
        self.set_partitioned(false);
    }

    pub fn is_partitioned(&self) -> bool {
        self.shared.mode.borrow().partitioned
    }

    /// Connections forwarded to the target so far.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Connections held by partitions so far: accepted during one (never forwarded),
    /// or open when one started (frozen).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Bytes clients wrote into held or frozen connections so far (read and thrown
    /// away, never delivered): how a test knows that something it sent went into the
    /// black hole rather than waiting to be sent.
    pub fn swallowed(&self) -> usize {
        self.shared.swallowed.load(Ordering::Relaxed)
    }

    fn set_partitioned(&self, partitioned: bool) {
        self.shared.mode.send_if_modified(|mode| {
            if mode.partitioned == partitioned {
                return false;
            }
            mode.partitioned = partitioned;
            mode.epoch += 1;
            true
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.mode.send_modify(|mode| {
            mode.closed = true;
            mode.epoch += 1;
        });
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(handle(client, shared.clone()));
    }
}

/// Resolves once the mode has changed `times` times since `epoch` (or the proxy is
/// closed); true if it is closed.
async fn changed(mode: &mut watch::Receiver<Mode>, epoch: u64, times: u64) -> bool {
    match mode
        .wait_for(|m| m.closed || m.epoch >= epoch + times)
        .await
    {
        Ok(m) => m.closed,
        Err(_) => true,
    }
}

async fn handle(mut client: TcpStream, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    let now = *mode.borrow_and_update();
    let target = *shared.target.lock().unwrap();
    let target = match target {
        Some(t) if !now.partitioned && !now.closed => t,
        _ => {
            // Black hole: keep the socket open, answer nothing.
            shared.held.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = changed(&mut mode, now.epoch, 1) => {}
                _ = swallow(&mut client, &shared) => {}
            }
            return;
        }
    };
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let partitioned = tokio::select! {
        // A partition wins over bytes that arrived with it: they are never forwarded.
        biased;
        closed = changed(&mut mode, now.epoch, 1) => !closed,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
    };
    if partitioned {
        shared.held.fetch_add(1, Ordering::Relaxed);
        // Frozen mid-stream: hold both ends until the partition heals, then drop them.
        tokio::select! {
            _ = changed(&mut mode, now.epoch, 2) => {}
            _ = swallow(&mut client, &shared) => {}
        }
    }
}

/// Reads what the client writes into the black hole and throws it away, counting it.
/// (The client cannot tell this from bytes left unread in a socket buffer.)
async fn swallow(client: &mut TcpStream, shared: &Shared) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return std::future::pending().await,
            Ok(n) => shared.swallowed.fetch_add(n, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn echo_once(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(data).await?;
        let mut buf = vec![0u8; data.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_black_holes_and_heals() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let proxy = Proxy::start("127.0.0.1", echo_server().await)
                .await
                .unwrap();
            let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
            assert_eq!(echo_once(&mut open, b"hello").await.unwrap(), b"hello");

            proxy.partition();
            // The open connection freezes: what is written is not answered.
            open.write_all(b"lost").await.unwrap();
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(Duration::from_millis(300), open.read(&mut buf));
            assert!(read.await.is_err(), "a frozen connection answered");
            // New connections are accepted and held.
            let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
            held.write_all(b"into the void").await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(300), held.read(&mut buf));
            assert!(read.await.is_err(), "a held connection answered");
            crate::eventually("both connections held", Duration::from_secs(10), || {
                proxy.held() == 2
            })
            .await;
            crate::eventually(
                "what was sent is swallowed",
                Duration::from_secs(10),
                || proxy.swallowed() == b"lost".len() + b"into the void".len(),
            )
            .await;

            proxy.heal();
            // What the partition held is closed, never delivered late.
            for mut stream in [open, held] {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                assert!(
                    rest.is_empty(),
                    "bytes held by the partition arrived: {rest:?}"
                );
            }
            let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
            assert_eq!(echo_once(&mut fresh, b"again").await.unwrap(), b"again");
            assert_eq!(proxy.forwarded(), 2);
        })
        .await
        .expect("the proxy test took too long");
    }

    #[tokio::test]
    async fn without_a_target_it_starts_partitioned() {
        let proxy = Proxy::bind("127.0.0.1").await.unwrap();
        assert!(proxy.is_partitioned());
        proxy.set_target(echo_server().await);
        proxy.heal();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), echo_once(&mut s, b"x"));
        assert_eq!(reply.await.unwrap().unwrap(), b"x");
    }
}
