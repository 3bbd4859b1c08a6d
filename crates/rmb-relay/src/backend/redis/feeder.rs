//! The feeder of a connected session: keeps its mailbox filled from its queue in Redis,
//! a bounded window at a time, and removes from Redis what the writer has written.
//!
//! Each round is one pipeline: remove what is done, read what comes after the window.
//! A frame leaves Redis only after the writer flushed it to the socket, so a crash of
//! this instance loses nothing; the next connection of the session (here or on another
//! instance) reads the queue from its start and gets again what was in flight (at
//! least once: receivers drop copies by uid).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::mailbox::{Done, Mailbox, StoredId};
use crate::session_key::SessionKey;

/// A window holds at most this many frames, and (but for one large frame) bytes; the
/// next batch is read when the window is below both.
pub(super) const WINDOW_FRAMES: usize = 64;
pub(super) const WINDOW_BYTES: usize = 256 << 10;

/// Feeds `mailbox` until `stop`; returns the done frames it could not remove yet, for
/// the caller to remove once the writer has stopped too.
pub(super) async fn run(
    inner: Arc<Inner>,
    key: SessionKey,
    mailbox: Arc<Mailbox>,
    stop: CancellationToken,
) -> Vec<Done> {
    let mut window = Window::default();
    let mut unacked: Vec<Done> = Vec::new();
    // Read at once: the queue may hold what waited for this session.
    let mut more = true;
    let mut backoff = Duration::from_millis(50);
    loop {
        if stop.is_cancelled() {
            return unacked;
        }
        let done = mailbox.take_done();
        window.remove(&done);
        unacked.extend(done);
        let read = (more && window.has_room()).then(|| window.after());
        if read.is_some() || !unacked.is_empty() {
            let round = inner.feed_round(&key, &unacked, read).await;
            match round {
                Ok(frames) => {
                    backoff = Duration::from_millis(50);
                    unacked.clear();
                    if let Some(frames) = frames {
                        more = window.add(&frames);
                        mailbox.push_stored(frames);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(session = %key, error = %e, "could not read or trim a queue in redis, retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return unacked,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return unacked,
            _ = mailbox.progressed() => {}
            _ = mailbox.arrived() => more = true,
        }
    }
}

/// The frames read from Redis and not yet done.
#[derive(Default)]
struct Window {
    frames: usize,
    bytes: usize,
    /// The last entry read, while the window is not empty: the next read starts after
    /// it. An empty window reads from the queue's start (everything before was removed).
    last: Option<StoredId>,
}

impl Window {
    fn has_room(&self) -> bool {
        self.frames < WINDOW_FRAMES && self.bytes < WINDOW_BYTES
    }

    fn after(&self) -> Option<StoredId> {
        self.last
    }

    /// Adds a batch read; true when the batch was full (more may be waiting).
    fn add(&mut self, frames: &[crate::mailbox::QueuedFrame]) -> bool {
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        self.frames += frames.len();
        self.bytes += bytes;
        if let Some(last) = frames.last() {
            self.last = last.id;
        }
        frames.len() >= WINDOW_FRAMES || bytes >= WINDOW_BYTES
    }

    fn remove(&mut self, done: &[Done]) {
        self.frames = self.frames.saturating_sub(done.len());
        self.bytes = self.bytes.saturating_sub(done.iter().map(|d| d.len).sum());
        if self.frames == 0 {
            *self = Window::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::QueuedFrame;
    use bytes::Bytes;

    fn stored(ms: u64, len: usize) -> QueuedFrame {
        QueuedFrame {
            id: Some(StoredId { ms, seq: 0 }),
            ..QueuedFrame::new(Bytes::from(vec![0; len]), 100)
        }
    }

    #[test]
    fn window_reads_after_its_last_frame_until_empty() {
        let mut w = Window::default();
        assert!(w.has_room());
        assert_eq!(w.after(), None);
        assert!(
            !w.add(&[stored(1, 10), stored(2, 10)]),
            "a short batch: nothing more"
        );
        assert_eq!(w.after(), Some(StoredId { ms: 2, seq: 0 }));
        w.remove(&[Done {
            id: StoredId { ms: 1, seq: 0 },
            len: 10,
        }]);
        assert_eq!(w.after(), Some(StoredId { ms: 2, seq: 0 }));
        w.remove(&[Done {
            id: StoredId { ms: 2, seq: 0 },
            len: 10,
        }]);
        assert_eq!(w.after(), None, "empty: read from the start again");
    }

    #[test]
    fn window_is_bounded_by_bytes_and_frames() {
        let mut w = Window::default();
        assert!(w.add(&[stored(1, WINDOW_BYTES)]), "a full batch by bytes");
        assert!(!w.has_room());
        let mut w = Window::default();
        let many: Vec<_> = (0..WINDOW_FRAMES as u64).map(|i| stored(i, 1)).collect();
        assert!(w.add(&many));
        assert!(!w.has_room());
    }
}
