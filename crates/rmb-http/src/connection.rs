//! One accepted connection: hyper's HTTP/1 (with upgrades) and HTTP/2, an idle watchdog,
//! body deadlines, and its share of graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::body::DeadlineBody;
use crate::budget::BudgetedReads;
use crate::ServeLimits;

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 61\r\n\
connection: close\r\n\
\r\n\
{\"error\":\"too many open connections; try again in a moment\"}\n";

/// Answers a connection beyond the cap without waiting for it: one non-blocking write of
/// a fixed 503 (lost if the socket is not writable), then the socket closes.
pub(crate) fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(REFUSAL);
}

/// When bytes last moved and how many requests are in progress, shared by the socket
/// wrapper, the service and the watchdog.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request in progress until dropped (when its response is ready, or the
/// request is abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The socket, recording activity, and owning the connection's permit: the permit is
/// released when the socket closes, also after the socket was handed to an upgraded
/// (WebSocket) stream.
struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Reads charged to the server's read budget, when it has one.
    budgeted: Option<BudgetedReads>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = match this.budgeted.as_mut() {
            Some(budgeted) => budgeted.poll_read(&mut this.stream, cx, buf),
            None => Pin::new(&mut this.stream).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, idles out, or shutdown (plus grace) passes.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    router: Router,
    limits: Arc<ServeLimits>,
    stop: CancellationToken,
) {
    let activity = Activity::new();
    let budgeted = limits.read_budget.clone().map(BudgetedReads::new);
    let hold = budgeted.as_ref().map(BudgetedReads::hold);
    let io = TrackedIo {
        stream,
        activity: activity.clone(),
        budgeted,
        _permit: permit,
    };
    let service = {
        let activity = activity.clone();
        let body_timeout = limits.body_read_timeout;
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&activity);
            let mut router = router.clone();
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
            request.extensions_mut().insert(ConnectInfo(peer));
            let hold = hold.clone();
            if let Some(hold) = &hold {
                request.extensions_mut().insert(hold.clone());
            }
            async move {
                let response = router.call(request).await;
                // The request is handled: its bytes are no longer held. (On HTTP/2 this
                // also releases what concurrent streams read so far; the budget errs
                // towards letting bytes in, never towards waiting forever.)
                if let Some(hold) = hold {
                    drop(hold.take());
                }
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);

    let mut hard_stop: Option<Instant> = None;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        let wake = hard_stop.map_or(idle_deadline, |h| h.min(idle_deadline));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if hard_stop.is_none() => {
                connection.as_mut().graceful_shutdown();
                hard_stop = Some(Instant::now() + limits.shutdown_grace);
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if hard_stop.is_some_and(|h| now >= h) {
                    tracing::debug!(%peer, "shutdown grace over: closing the connection");
                    return;
                }
                let idle = now.saturating_duration_since(activity.last()) >= limits.idle_timeout;
                if idle && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                if idle {
                    // A handler is still working: look again after another period.
                    activity.touch();
                }
            }
        }
    }
}
