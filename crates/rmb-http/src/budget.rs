//! A server-wide budget of bytes read from sockets and not yet released by the
//! application: the protection that lets a server accept large messages (the original
//! RMB relay takes WebSocket messages of up to 64 MiB) without letting many connections,
//! each buffering one such message, take all the memory.
//!
//! Every byte read from a socket first takes a permit of a shared semaphore. The permits
//! stay with the connection ([`ReadHold`]) until the application says the bytes are
//! dealt with: after each HTTP response, or, on an upgraded socket, each time the
//! application has finished with a received message ([`ReadHold::take`]). While the
//! budget is spent, reads wait (TCP back-pressure); a read that waits longer than
//! [`ReadBudget::wait`] fails with [`ReadBudgetExhausted`], so connections each holding
//! part of a message cannot wait on each other forever.
//!
//! The socket is polled for readiness *before* permits are taken: an idle connection
//! holds nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest read done at once under the budget: the permits for it are taken before the
/// read and the unused ones given back right after.
const CHUNK: usize = 64 * 1024;

/// The shared budget. Clones share it.
#[derive(Clone)]
pub struct ReadBudget {
    inner: Arc<Shared>,
}

struct Shared {
    semaphore: Arc<Semaphore>,
    bytes: usize,
    wait: Duration,
    /// Most bytes ever held at once (for tests and metrics).
    peak: AtomicUsize,
}

impl ReadBudget {
    /// A budget of `bytes` (at least one read chunk), where a read waits at most `wait`.
    pub fn new(bytes: usize, wait: Duration) -> Self {
        let bytes = bytes.clamp(CHUNK, Semaphore::MAX_PERMITS);
        ReadBudget {
            inner: Arc::new(Shared {
                semaphore: Arc::new(Semaphore::new(bytes)),
                bytes,
                wait,
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// A budget of at least `bytes` that always has room for one message of
    /// `largest_message` bytes with its headers: reads reserve a whole chunk before
    /// they know how much arrives, so a budget of exactly the largest message could
    /// refuse that message when the reads happen to fall badly.
    pub fn with_room_for(bytes: usize, largest_message: usize, wait: Duration) -> Self {
        let room = largest_message.saturating_add(2 * CHUNK);
        ReadBudget::new(bytes.max(room), wait)
    }

    /// The budget's size in bytes.
    pub fn bytes(&self) -> usize {
        self.inner.bytes
    }

    /// How long a read may wait for room.
    pub fn wait(&self) -> Duration {
        self.inner.wait
    }

    /// Bytes read and not yet released, on all connections.
    pub fn held(&self) -> usize {
        self.inner
            .bytes
            .saturating_sub(self.inner.semaphore.available_permits())
    }

    /// The most bytes held at once since the budget was made.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    fn note_peak(&self) {
        self.inner.peak.fetch_max(self.held(), Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ReadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBudget")
            .field("bytes", &self.inner.bytes)
            .field("wait", &self.inner.wait)
            .field("held", &self.held())
            .finish()
    }
}

/// Two limits are the same if they share one budget.
impl PartialEq for ReadBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ReadBudget {}

/// A read waited [`ReadBudget::wait`] for room in the budget and gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is out of memory for incoming messages ({bytes} bytes being read or handled); retry later")]
pub struct ReadBudgetExhausted {
    pub bytes: usize,
}

/// Whether `error`, or one of its sources, is a [`ReadBudgetExhausted`] (an I/O error
/// carrying it counts too): a WebSocket server can then close with 1013 "try again
/// later" instead of treating the socket as broken.
pub fn is_read_budget_exhausted(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<ReadBudgetExhausted>() {
            return true;
        }
        // An `io::Error`'s `source` skips the error it wraps: look inside it.
        let wrapped = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        if wrapped.is_some_and(|inner| inner.is::<ReadBudgetExhausted>()) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The bytes one connection has read and the application has not released yet. Every
/// request carries one as an extension (clones share it) when the server has a budget.
#[derive(Clone)]
pub struct ReadHold {
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl ReadHold {
    fn new() -> Self {
        ReadHold {
            held: Arc::default(),
        }
    }

    /// A poisoned lock still guards a plain permit: use it.
    fn lock(&self) -> MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what the connection holds: the caller keeps the returned permit while it
    /// still holds the bytes read (a message not yet handed on), then drops it.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.lock().take()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock()
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.lock();
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
    }
}

impl std::fmt::Debug for ReadHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHold")
            .field("bytes", &self.bytes())
            .finish()
    }
}

type Acquire = Pin<Box<dyn Future<Output = io::Result<OwnedSemaphorePermit>> + Send>>;

/// The reading side of one budgeted socket.
pub(crate) struct BudgetedReads {
    budget: ReadBudget,
    hold: ReadHold,
    waiting: Option<Acquire>,
}

impl BudgetedReads {
    pub(crate) fn new(budget: ReadBudget) -> Self {
        BudgetedReads {
            budget,
            hold: ReadHold::new(),
            waiting: None,
        }
    }

    pub(crate) fn hold(&self) -> ReadHold {
        self.hold.clone()
    }

    /// Permits for up to `want` bytes: at once if the budget has them, else after
    /// waiting (at most the budget's wait).
    fn poll_permits(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<OwnedSemaphorePermit>> {
        if self.waiting.is_none() {
            let semaphore = self.budget.inner.semaphore.clone();
            // `want` is at most CHUNK, far below u32::MAX.
            let n = u32::try_from(want).unwrap_or(u32::MAX);
            if let Ok(permit) = semaphore.clone().try_acquire_many_owned(n) {
                return Poll::Ready(Ok(permit));
            }
            let wait = self.budget.inner.wait;
            let bytes = self.budget.inner.bytes;
            self.waiting = Some(Box::pin(async move {
                match tokio::time::timeout(wait, semaphore.acquire_many_owned(n)).await {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(_)) | Err(_) => Err(io::Error::other(ReadBudgetExhausted { bytes })),
                }
            }));
        }
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(waiting.as_mut().poll(cx));
        self.waiting = None;
        Poll::Ready(result)
    }

    /// Reads from `stream` into `buf`, charging the budget for what was read.
    pub(crate) fn poll_read(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Nothing is taken from the budget until there is something to read.
        if self.waiting.is_none() {
            std::task::ready!(stream.poll_read_ready(cx))?;
        }
        let want = buf.remaining().min(CHUNK);
        let mut permit = std::task::ready!(self.poll_permits(cx, want))?;
        let read = if buf.remaining() <= CHUNK {
            let before = buf.filled().len();
            let result = Pin::new(&mut *stream).poll_read(cx, buf);
            result.map_ok(|()| buf.filled().len() - before)
        } else {
            // Only `want` bytes are paid for: read into a buffer of that size.
            let mut chunk = vec![0u8; want];
            let mut limited = ReadBuf::new(&mut chunk);
            let result = Pin::new(&mut *stream).poll_read(cx, &mut limited);
            result.map_ok(|()| {
                let n = limited.filled().len();
                buf.put_slice(limited.filled());
                n
            })
        };
        match read {
            Poll::Ready(Ok(n)) if n > 0 => {
                // Keep what was read; the rest goes back to the budget now.
                let used = permit.split(n);
                drop(permit);
                if let Some(used) = used {
                    self.hold.add(used);
                    self.budget.note_peak();
                }
                Poll::Ready(Ok(()))
            }
            // End of stream, an error, or readiness that was spurious: nothing held.
            Poll::Ready(result) => Poll::Ready(result.map(|_| ())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_found_through_an_io_error() {
        let io = io::Error::other(ReadBudgetExhausted { bytes: 10 });
        assert!(is_read_budget_exhausted(&io));
        let other = io::Error::other("something else");
        assert!(!is_read_budget_exhausted(&other));
    }

    #[test]
    fn a_budget_is_at_least_one_chunk() {
        assert_eq!(ReadBudget::new(1, Duration::from_secs(1)).bytes(), CHUNK);
    }
}
