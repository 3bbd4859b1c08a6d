//! A session's mailbox: the ordered queue of frames waiting to be written to it.
//!
//! The same structure serves a connected session (its writer task drains it) and an
//! offline one (frames wait for the next connection), so "deliver" never blocks the
//! sender, a slow reader never stalls anyone else, and order is kept across a
//! reconnect. Memory is bounded per mailbox in frames and bytes: when full, the oldest
//! frame is dropped (and counted), because the newest is the most likely still wanted.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::budget::Charge;

/// One serialized envelope plus the unix second after which it is worthless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFrame {
    pub data: Bytes,
    pub deadline: u64,
}

/// Bounds of one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            max_frames: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// What happened to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Oldest frames dropped to make room.
    pub dropped: usize,
}

/// A frame in a mailbox, with its share of the offline-queue budget if it was queued
/// while nobody was connected (given back when the entry is dropped).
#[derive(Debug)]
struct Entry {
    frame: QueuedFrame,
    _charge: Option<Charge>,
}

impl Entry {
    fn new(frame: QueuedFrame) -> Self {
        Entry {
            frame,
            _charge: None,
        }
    }

    fn len(&self) -> usize {
        self.frame.data.len()
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Entry>,
    bytes: usize,
    /// The connection currently draining this mailbox, if any: its id and the token
    /// that stops it (when a newer connection replaces it).
    connection: Option<(u64, CancellationToken)>,
}

#[derive(Debug, Default)]
pub struct Mailbox {
    state: Mutex<State>,
    notify: Notify,
    limits: MailboxLimits,
}

impl Mailbox {
    pub fn new(limits: MailboxLimits) -> Self {
        Mailbox {
            state: Mutex::default(),
            notify: Notify::new(),
            limits,
        }
    }

    /// Appends a frame and wakes the writer.
    pub fn push(&self, frame: QueuedFrame) -> PushOutcome {
        self.push_entry(Entry::new(frame))
    }

    /// Appends a frame holding `charge` (its share of the offline-queue budget) until
    /// it leaves the mailbox.
    pub fn push_charged(&self, frame: QueuedFrame, charge: Charge) -> PushOutcome {
        self.push_entry(Entry {
            frame,
            _charge: Some(charge),
        })
    }

    fn push_entry(&self, entry: Entry) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        {
            let mut st = self.state.lock();
            st.bytes += entry.len();
            st.frames.push_back(entry);
            while st.frames.len() > self.limits.max_frames
                || (st.bytes > self.limits.max_bytes && st.frames.len() > 1)
            {
                let old = st.frames.pop_front().expect("non-empty");
                st.bytes -= old.len();
                outcome.dropped += 1;
            }
        }
        self.notify.notify_one();
        outcome
    }

    /// Puts frames that could not be written back at the front, in order.
    pub fn requeue_front(&self, frames: Vec<QueuedFrame>) {
        if frames.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for frame in frames.into_iter().rev() {
            st.bytes += frame.data.len();
            st.frames.push_front(Entry::new(frame));
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Moves up to `max` live frames into `out`, discarding expired ones; returns how
    /// many expired frames were discarded.
    pub fn pop_batch(&self, now: u64, max: usize, out: &mut Vec<QueuedFrame>) -> usize {
        let mut expired = 0;
        let mut st = self.state.lock();
        while out.len() < max {
            let Some(entry) = st.frames.pop_front() else {
                break;
            };
            st.bytes -= entry.len();
            if entry.frame.deadline <= now {
                expired += 1;
            } else {
                out.push(entry.frame);
            }
        }
        expired
    }

    /// Takes everything (e.g. to move it to Redis on shutdown).
    pub fn take_all(&self) -> Vec<QueuedFrame> {
        let mut st = self.state.lock();
        st.bytes = 0;
        st.frames.drain(..).map(|e| e.frame).collect()
    }

    /// Drops expired frames; returns how many.
    pub fn purge_expired(&self, now: u64) -> usize {
        let mut st = self.state.lock();
        let before = st.frames.len();
        st.frames.retain(|e| e.frame.deadline > now);
        st.bytes = st.frames.iter().map(Entry::len).sum();
        before - st.frames.len()
    }

    /// Waits until something is pushed (returns at once if a push happened since the
    /// last wait).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks connection `id` as the one draining this mailbox; returns the stop token of
    /// the connection it replaces, which the caller cancels.
    pub fn set_connection(&self, id: u64, stop: CancellationToken) -> Option<CancellationToken> {
        self.state
            .lock()
            .connection
            .replace((id, stop))
            .map(|(_, token)| token)
    }

    /// Stops whichever connection drains this mailbox (a newer one connected elsewhere).
    pub fn kick(&self) -> bool {
        match self.state.lock().connection.take() {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Clears the connection mark if it is still `id` (a newer connection may have taken
    /// over already). Returns true if it was cleared.
    pub fn clear_connection(&self, id: u64) -> bool {
        let mut st = self.state.lock();
        if st
            .connection
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            st.connection = None;
            true
        } else {
            false
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state.lock().connection.is_some()
    }

    /// True when nothing is queued and nobody is connected: the mailbox can be removed.
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.frames.is_empty() && st.connection.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, deadline: u64) -> QueuedFrame {
        QueuedFrame {
            data: Bytes::from(vec![n; 10]),
            deadline,
        }
    }

    #[test]
    fn keeps_order_and_drops_expired() {
        let mb = Mailbox::new(MailboxLimits::default());
        mb.push(frame(1, 100));
        mb.push(frame(2, 50));
        mb.push(frame(3, 100));
        let mut out = Vec::new();
        assert_eq!(mb.pop_batch(60, 10, &mut out), 1);
        assert_eq!(
            out.iter().map(|f| f.data[0]).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(mb.is_empty());
    }

    #[test]
    fn bounded_by_count_dropping_oldest() {
        let mb = Mailbox::new(MailboxLimits {
            max_frames: 2,
            max_bytes: 1000,
        });
        assert_eq!(mb.push(frame(1, 100)).dropped, 0);
        mb.push(frame(2, 100));
        assert_eq!(mb.push(frame(3, 100)).dropped, 1);
        let mut out = Vec::new();
        mb.pop_batch(0, 10, &mut out);
        assert_eq!(
            out.iter().map(|f| f.data[0]).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn bounded_by_bytes_but_keeps_one_large_frame() {
        let mb = Mailbox::new(MailboxLimits {
            max_frames: 100,
            max_bytes: 25,
        });
        mb.push(frame(1, 100));
        mb.push(frame(2, 100));
        assert_eq!(mb.push(frame(3, 100)).dropped, 1);
        let big = QueuedFrame {
            data: Bytes::from(vec![9; 100]),
            deadline: 100,
        };
        assert_eq!(mb.push(big).dropped, 2);
        assert_eq!(mb.len(), 1);
    }

    #[test]
    fn requeue_puts_frames_back_in_front() {
        let mb = Mailbox::new(MailboxLimits::default());
        mb.push(frame(1, 100));
        mb.push(frame(2, 100));
        mb.push(frame(3, 100));
        let mut out = Vec::new();
        mb.pop_batch(0, 2, &mut out);
        mb.requeue_front(out);
        let mut all = Vec::new();
        mb.pop_batch(0, 10, &mut all);
        assert_eq!(
            all.iter().map(|f| f.data[0]).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn connection_marks() {
        let mb = Mailbox::new(MailboxLimits::default());
        assert!(mb.is_idle());
        let first = CancellationToken::new();
        assert!(mb.set_connection(1, first.clone()).is_none());
        let replaced = mb.set_connection(2, CancellationToken::new()).unwrap();
        replaced.cancel();
        assert!(first.is_cancelled());
        assert!(
            !mb.clear_connection(1),
            "an old connection must not clear a newer one"
        );
        assert!(mb.is_connected());
        assert!(mb.clear_connection(2));
        assert!(mb.is_idle());
    }

    #[tokio::test]
    async fn push_wakes_a_waiter_even_if_it_came_first() {
        let mb = std::sync::Arc::new(Mailbox::new(MailboxLimits::default()));
        mb.push(frame(1, 100));
        // The permit stored by the push makes this return immediately.
        mb.notified().await;
        let mb2 = mb.clone();
        let waiter = tokio::spawn(async move { mb2.notified().await });
        mb.push(frame(2, 100));
        waiter.await.unwrap();
    }
}
