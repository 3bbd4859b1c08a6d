//! Where sessions and queues live. Two backends behind one trait:
//! - [`memory::MemoryBackend`] (default): one relay process, nothing shared;
//! - [`redis::RedisBackend`]: several relay processes with the same domains share
//!   sessions and queues through Redis; queued envelopes survive a restart.
//!
//! Both keep locally connected sessions in [`LocalSessions`] so delivery between two
//! sessions on the same process never touches Redis.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use rmb_core::rules::HashKey;
use tokio_util::sync::CancellationToken;

use crate::budget::{Charge, OverBudget};
use crate::dedup::{Claim, SeenKeys};
use crate::mailbox::{Done, Mailbox, MailboxLimits, PushOutcome, QueuedFrame};
use crate::metrics::Metrics;
use crate::session_key::SessionKey;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The queues' budget has no room (not a storage failure: a limit).
    #[error(transparent)]
    QueueFull(#[from] OverBudget),
    #[error("the relay's federation backlog is full (at most {} envelopes or {} bytes), retry later", limits.max_frames, limits.max_bytes)]
    OutboxFull { limits: MailboxLimits },
    #[error("the relay is shutting down")]
    Stopped,
    /// Not stored: a copy of this envelope was stored (accepted) before. Found by a
    /// backend that checks as it stores ([`Backend::claim`]); the envelope is dropped.
    #[error("a copy of this envelope was accepted already")]
    Copy,
}

/// How much may be queued: per session (beyond it the oldest frames are dropped), per
/// destination twin across all its session ids, and in the whole relay (beyond those
/// new frames are refused). The Redis backend enforces all of them in Redis, for all
/// its instances together; the memory backend keeps its own [`crate::budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    pub session: MailboxLimits,
    pub twin: MailboxLimits,
    pub total: MailboxLimits,
    /// Federation work waiting (the durable outbox of the Redis backend).
    pub outbox: MailboxLimits,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A session connected to this process: returns its mailbox, already holding what
    /// was queued for it. A previous connection of the same session (here or on another
    /// instance) is told to stop.
    async fn attach(
        &self,
        key: &SessionKey,
        conn: u64,
        stop: CancellationToken,
    ) -> Result<Arc<Mailbox>, BackendError>;

    /// The connection `conn` of `key` ended.
    async fn detach(&self, key: &SessionKey, conn: u64);

    /// Hands a frame the relay made (a relay error) to the session if it is connected
    /// to this process, without storing it: the sender of a refused envelope must hear
    /// of it even when storage is what failed. `false`: not connected here.
    fn deliver_here(&self, key: &SessionKey, frame: &QueuedFrame) -> bool;

    /// Hands the frame to the session if it is connected (to this process or, with
    /// Redis, to another instance). `Ok(false)`: nobody is connected, frame not taken.
    /// A durable backend returns `Ok(true)` only once the frame is stored.
    async fn deliver_connected(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
    ) -> Result<bool, BackendError>;

    /// Queues the frame for a session of a twin that lives on this relay, to be written
    /// when it connects (or at once if it is connected). A durable backend returns once
    /// the frame is stored.
    async fn enqueue(&self, key: &SessionKey, frame: QueuedFrame) -> Result<(), BackendError>;

    /// Claims the keys of an envelope being accepted, remembered until `deadline`
    /// (D1a): [`Claim::Copy`] when one of them was accepted before. The in-memory
    /// backend remembers them here, per process. The Redis backend shares the memory
    /// among its instances and keeps it across restarts: here it does nothing, and
    /// remembers the keys a frame carries ([`QueuedFrame::remember`]) in the same atomic
    /// step that stores the frame, refusing a copy found then with [`BackendError::Copy`]
    /// (so a crash can never leave remembered an envelope that was not stored).
    async fn claim(&self, keys: &SeenKeys, deadline: u64, now: u64) -> Result<Claim, BackendError>;

    /// Forgets claimed keys: the envelope was refused after all.
    async fn release(&self, keys: &SeenKeys);

    /// Periodic housekeeping: drop expired frames, idle mailboxes and expired memory of
    /// accepted envelopes. Returns the number of expired frames dropped.
    async fn sweep(&self, now: u64) -> usize;

    /// Frames queued in this process (for the queue-depth gauge).
    fn local_queue_depth(&self) -> usize;

    /// Shutdown: keep what can be kept (Redis moves local mailboxes back to Redis).
    async fn shutdown(&self);

    /// Durable federation work shared by the relay's instances, if this backend keeps
    /// one (Redis); `None`: federation work lives in this process (memory).
    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        None
    }

    /// The key de-duplication hashes use, if this backend's memory is shared by several
    /// processes (which must all hash alike); `None`: any key of this process's own.
    fn hash_key(&self) -> Option<HashKey> {
        None
    }
}

/// Federation work in storage: envelopes to post to other relays, taken by whichever
/// instance has room, reclaimed from instances that died holding some.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores an envelope to federate; returns once it is durable.
    async fn put(&self, frame: &QueuedFrame) -> Result<(), BackendError>;

    /// Up to `max` envelopes to federate (new ones, and those a dead instance had
    /// taken); waits up to a second for some. Each stays this instance's until
    /// [`Outbox::done`] (or until it dies, when another instance takes it over).
    async fn take(&self, max: usize) -> Result<Vec<QueuedFrame>, BackendError>;

    /// The envelope was federated, or given up on (its sender was told): remove it.
    async fn done(&self, done: Done) -> Result<(), BackendError>;

    /// This instance is stopping: other instances may take over what it holds at once.
    async fn leave(&self);
}

/// The sessions connected to this process and the mailboxes of local queues.
/// Hashing session keys is on the path of every envelope: foldhash is several times
/// faster than the default SipHash and still seeded per process.
type FastHash = foldhash::fast::RandomState;

pub struct LocalSessions {
    mailboxes: DashMap<SessionKey, Arc<Mailbox>, FastHash>,
    limits: MailboxLimits,
}

impl LocalSessions {
    pub fn new(limits: MailboxLimits) -> Self {
        LocalSessions {
            mailboxes: DashMap::with_hasher(FastHash::default()),
            limits,
        }
    }

    /// Makes `conn` the connection of `key` with a new, empty mailbox (the backend
    /// feeds it); cancels the connection it replaces, which keeps its own mailbox.
    pub fn attach_fresh(
        &self,
        key: &SessionKey,
        conn: u64,
        stop: CancellationToken,
    ) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new(self.limits));
        mailbox.set_connection(conn, stop);
        if let Some(previous) = self.mailboxes.insert(key.clone(), mailbox.clone()) {
            if previous.kick() {
                tracing::info!(session = %key, "newer connection replaces the current one");
            }
        }
        mailbox
    }

    /// Makes `conn` the connection of `key`; cancels the one it replaces.
    pub fn attach(&self, key: &SessionKey, conn: u64, stop: CancellationToken) -> Arc<Mailbox> {
        let entry = self
            .mailboxes
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mailbox::new(self.limits)));
        if let Some(previous) = entry.set_connection(conn, stop) {
            tracing::info!(session = %key, "newer connection replaces the current one");
            previous.cancel();
        }
        entry.clone()
    }

    pub fn detach(&self, key: &SessionKey, conn: u64) -> Option<Arc<Mailbox>> {
        let mailbox = self.mailboxes.get(key)?.clone();
        mailbox.clear_connection(conn).then_some(mailbox)
    }

    /// Pushes to the mailbox of `key` only if a connection drains it.
    /// The push happens under the map's shard lock so a concurrent sweep cannot remove
    /// the mailbox between lookup and push (which would lose the frame).
    pub fn push_if_connected(&self, key: &SessionKey, frame: &QueuedFrame) -> Option<PushOutcome> {
        let mailbox = self.mailboxes.get(key)?;
        mailbox.is_connected().then(|| mailbox.push(frame.clone()))
    }

    /// [`push_if_connected`](Self::push_if_connected), counting and logging any oldest
    /// frames dropped to make room: the local fast path of both backends.
    pub fn deliver(&self, key: &SessionKey, frame: &QueuedFrame, metrics: &Metrics) -> bool {
        match self.push_if_connected(key, frame) {
            Some(outcome) => {
                memory::note_dropped(metrics, key, outcome.dropped);
                true
            }
            None => false,
        }
    }

    /// Pushes to the mailbox of `key`, creating it if needed; the frame holds `charge`
    /// while it waits.
    pub fn push(&self, key: &SessionKey, frame: QueuedFrame, charge: Charge) -> PushOutcome {
        self.mailboxes
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mailbox::new(self.limits)))
            .push_charged(frame, charge)
    }

    /// The mailbox of `key` if a connection drains it here.
    pub fn connected_mailbox(&self, key: &SessionKey) -> Option<Arc<Mailbox>> {
        self.mailboxes
            .get(key)
            .filter(|m| m.is_connected())
            .map(|m| m.clone())
    }

    /// Connected sessions and their mailboxes.
    pub fn connected(&self) -> Vec<(SessionKey, Arc<Mailbox>)> {
        self.mailboxes
            .iter()
            .filter(|e| e.value().is_connected())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Stops the connection of `key` if it is here.
    pub fn kick(&self, key: &SessionKey) -> bool {
        self.mailboxes.get(key).is_some_and(|m| m.kick())
    }

    pub fn sweep(&self, now: u64) -> usize {
        let mut expired = 0;
        for mailbox in self.mailboxes.iter() {
            expired += mailbox.purge_expired(now);
        }
        self.mailboxes.retain(|_, m| !m.is_idle());
        expired
    }

    pub fn queue_depth(&self) -> usize {
        self.mailboxes.iter().map(|m| m.len()).sum()
    }

    /// Every mailbox with its key (for shutdown).
    pub fn drain_all(&self) -> Vec<(SessionKey, Vec<QueuedFrame>)> {
        self.mailboxes
            .iter()
            .map(|e| (e.key().clone(), e.value().take_all()))
            .filter(|(_, frames)| !frames.is_empty())
            .collect()
    }
}
