//! The default backend: everything in this process. Queues are lost when the process
//! stops; use the Redis backend when that matters.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, LocalSessions};
use crate::mailbox::{Mailbox, MailboxLimits, QueuedFrame};
use crate::metrics::Metrics;
use crate::session_key::SessionKey;

pub struct MemoryBackend {
    sessions: LocalSessions,
    metrics: Arc<Metrics>,
}

impl MemoryBackend {
    pub fn new(limits: MailboxLimits, metrics: Arc<Metrics>) -> Self {
        MemoryBackend {
            sessions: LocalSessions::new(limits),
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

    fn deliver_here(&self, key: &SessionKey, frame: &QueuedFrame) -> bool {
        self.sessions.deliver(key, frame, &self.metrics)
    }

    async fn deliver_connected(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
    ) -> Result<bool, BackendError> {
        Ok(self.sessions.deliver(key, frame, &self.metrics))
    }

    async fn enqueue(&self, key: &SessionKey, frame: QueuedFrame) -> Result<(), BackendError> {
        let outcome = self.sessions.push(key, frame);
        note_dropped(&self.metrics, key, outcome.dropped);
        Ok(())
    }

    async fn sweep(&self, now: u64) -> usize {
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
