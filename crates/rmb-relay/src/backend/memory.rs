//! The default backend: everything in this process. Queues are lost when the process
//! stops; use the Redis backend when that matters.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, LocalSessions};
use crate::budget::QueueBudget;
use crate::config::Config;
use crate::dedup::{Claim, SeenKeys, SeenMemory};
use crate::mailbox::{Mailbox, QueuedFrame};
use crate::metrics::Metrics;
use crate::session_key::SessionKey;

pub struct MemoryBackend {
    sessions: LocalSessions,
    /// What frames queued for offline sessions may hold, per twin and in all.
    budget: Arc<QueueBudget>,
    seen: SeenMemory,
    metrics: Arc<Metrics>,
}

impl MemoryBackend {
    /// Session mailboxes, offline queues and the memory of accepted envelopes as
    /// `config` bounds them.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        MemoryBackend {
            sessions: LocalSessions::new(config.mailbox),
            budget: QueueBudget::new(config.queues),
            seen: SeenMemory::new(config.dedup_capacity),
            metrics,
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn attach(
        &self,
        key: &SessionKey,
        conn: u64,
        stop: CancellationToken,
    ) -> Result<Arc<Mailbox>, BackendError> {
        Ok(self.sessions.attach(key, conn, stop))
    }

    async fn detach(&self, key: &SessionKey, conn: u64) {
        self.sessions.detach(key, conn);
    }

    fn deliver_local(&self, key: &SessionKey, frame: &QueuedFrame) -> bool {
        self.sessions.deliver(key, frame, &self.metrics)
    }

    async fn deliver_connected(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
    ) -> Result<bool, BackendError> {
        Ok(self.deliver_local(key, frame))
    }

    async fn enqueue(&self, key: &SessionKey, frame: QueuedFrame) -> Result<(), BackendError> {
        let charge = self.budget.try_charge(key.twin, frame.data.len())?;
        let outcome = self.sessions.push(key, frame, charge);
        note_dropped(&self.metrics, key, outcome.dropped);
        Ok(())
    }

    async fn claim(&self, keys: &SeenKeys, deadline: u64, now: u64) -> Result<Claim, BackendError> {
        Ok(self.seen.claim(keys, deadline, now))
    }

    async fn release(&self, keys: &SeenKeys) {
        self.seen.release(keys);
    }

    async fn sweep(&self, now: u64) -> usize {
        self.seen.sweep(now);
        self.sessions.sweep(now)
    }

    fn local_queue_depth(&self) -> usize {
        self.sessions.queue_depth()
    }

    async fn shutdown(&self) {
        let lost: usize = self.sessions.drain_all().iter().map(|(_, f)| f.len()).sum();
        if lost > 0 {
            tracing::warn!(lost, "in-memory backend: queued envelopes are dropped at shutdown (use --redis to keep them)");
        }
    }
}

pub(crate) fn note_dropped(metrics: &Metrics, key: &SessionKey, dropped: usize) {
    if dropped > 0 {
        Metrics::add(&metrics.queue_dropped, dropped as u64);
        tracing::warn!(session = %key, dropped, "session queue full: dropped the oldest envelopes");
    }
}
