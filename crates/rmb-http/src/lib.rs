//! # rmb-http: one hardened HTTP serving loop for the RMB servers
//!
//! `axum::serve` accepts every connection and waits forever for a client that sends
//! nothing, trickles its headers one byte at a time, or never finishes its body: a few
//! hundred such sockets (slowloris) hold a server's file descriptors. [`serve`] runs an
//! [`axum::Router`] with the limits of [`ServeLimits`]:
//!
//! - at most [`ServeLimits::max_connections`] open connections, each holding an owned
//!   semaphore permit for as long as its socket lives, *including* after a WebSocket
//!   upgrade (the permit moves with the socket into the upgraded stream). Beyond the cap a
//!   new connection gets a short `503` and is closed at once;
//! - the request head must arrive within [`ServeLimits::header_read_timeout`];
//! - a connection with no request in progress and no bytes moving for
//!   [`ServeLimits::idle_timeout`] is closed (this covers a client that connects and
//!   sends nothing, and idle keep-alive connections);
//! - a request body must be complete within [`ServeLimits::body_read_timeout`] of the
//!   request's arrival; reading it after that fails with [`BodyTimeout`] (see
//!   [`is_body_timeout`]);
//! - graceful shutdown: when `shutdown` resolves, no new connections are accepted, idle
//!   connections close, requests in progress finish (for at most
//!   [`ServeLimits::shutdown_grace`]), then [`serve`] returns. Upgraded connections
//!   (WebSockets) belong to the application, which closes them itself.
//!
//! - optionally, a [`ReadBudget`]: bytes read from sockets and not yet released count
//!   against one server-wide byte budget; reads wait while it is spent, and fail with
//!   [`ReadBudgetExhausted`] after waiting [`ReadBudget::wait`].
//!
//! Every request carries the peer address as an [`axum::extract::ConnectInfo`]
//! extension, and accepted sockets have `TCP_NODELAY` set (replies are small writes).

mod body;
mod budget;
mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::{is_body_timeout, BodyTimeout};
pub use budget::{is_read_budget_exhausted, ReadBudget, ReadBudgetExhausted, ReadHold};

/// The limits [`serve`] enforces. [`Default`] suits a public API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections at most (default 4096). Upgraded connections count until they
    /// close.
    pub max_connections: usize,
    /// How long a client may take to send a complete request head (default 10 s).
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in progress and no bytes moving
    /// (default 60 s).
    pub idle_timeout: Duration,
    /// How long after its head a request's body must be complete (default 30 s).
    pub body_read_timeout: Duration,
    /// On shutdown, how long requests in progress may still run (default 10 s).
    pub shutdown_grace: Duration,
    /// Largest request head, bytes (default 64 KiB; at least 8 KiB).
    pub max_header_bytes: usize,
    /// A budget every byte read from every socket is charged to until the request is
    /// answered, or, on an upgraded socket, until the application releases it through
    /// the request's [`ReadHold`] extension (default: none, reads are not charged).
    pub read_budget: Option<ReadBudget>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            read_budget: None,
        }
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves, then shuts down
/// gracefully and returns. Fails only if the listener itself fails for good.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if is_fatal_accept_error(&e) {
                        stop.cancel();
                        connections.close();
                        connections.wait().await;
                        return Err(e);
                    }
                    // Out of file descriptors or a connection reset before accept: the
                    // listener is fine, back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.refused(peer, limits.max_connections);
            connection::refuse(&stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        connections.spawn(connection::run(
            stream,
            peer,
            permit,
            router.clone(),
            limits.clone(),
            stop.clone(),
        ));
    }
    // Closed first, so new clients are refused at once instead of waiting in the backlog.
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors after which the listener cannot accept again.
fn is_fatal_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
    )
}

/// Logs refused connections at most once every 10 s, so a flood does not flood the log.
#[derive(Default)]
struct RefusalLog {
    refused: AtomicU64,
    last_logged: AtomicU64,
}

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, cap: usize) {
        let count = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_logged.load(Ordering::Relaxed);
        if now >= last.saturating_add(10)
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %peer,
                cap,
                refused_so_far = count,
                "connection limit reached: refusing new connections"
            );
        }
    }
}
