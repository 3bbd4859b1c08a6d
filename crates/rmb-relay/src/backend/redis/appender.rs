//! Storing frames in Redis, batched: every envelope the relay accepts (for a session of
//! its domains, or to federate) is stored before the relay confirms it to the sender,
//! and callers on all connections share round trips: while one pipeline is out, the
//! next one fills.
//!
//! A frame is handed to the batching task at once, in the caller's first poll, so the
//! frames of one connection are stored in the order it sent them however many of them
//! wait for Redis together (the read loop pipelines them). The hand-off is therefore
//! not bounded here: what waits is bounded by its callers, each frame of a session is
//! one of at most `MAX_ROUTING` in flight per connection and its bytes are held in the
//! read budget until it is stored, even when its session ends first (federation posts
//! likewise), and the connections are bounded.

use std::sync::Arc;

use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::backend::BackendError;
use crate::budget::OverBudget;
use crate::mailbox::QueuedFrame;
use crate::metrics::Metrics;
use crate::session_key::SessionKey;

/// Most frames, and bytes, in one pipeline.
const BATCH_FRAMES: usize = 256;
const BATCH_BYTES: usize = 8 << 20;

/// What became of a frame to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Appended {
    /// Nobody holds the session (asked to store only if somebody does): not stored.
    NotConnected,
    /// Stored. `owner`: the instance holding the session, if any (already poked when
    /// it is another one); `dropped`: the session's oldest frames dropped for room.
    Stored {
        owner: Option<String>,
        dropped: usize,
    },
}

/// Where a frame goes.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A session's queue (only if the session is connected somewhere, when
    /// `require_owner`).
    Session {
        key: SessionKey,
        require_owner: bool,
    },
    /// The federation outbox.
    Outbox,
}

pub(super) struct Request {
    target: Target,
    frame: QueuedFrame,
    reply: oneshot::Sender<Result<Appended, BackendError>>,
}

/// The handle callers use; the batching task runs until `shutdown`.
#[derive(Clone)]
pub(super) struct Appender {
    tx: mpsc::UnboundedSender<Request>,
}

impl Appender {
    /// The handle, and the batching task for the caller to spawn.
    pub(super) fn start(
        inner: Arc<Inner>,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Appender { tx }, run(inner, rx, shutdown))
    }

    /// Stores `frame` at `target`; returns once Redis has it, or why it does not.
    /// The frame is handed on before the first await: calls are stored in the order
    /// they were made.
    pub(super) fn append(
        &self,
        target: Target,
        frame: &QueuedFrame,
    ) -> impl std::future::Future<Output = Result<Appended, BackendError>> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            target,
            frame: frame.clone(),
            reply,
        };
        let sent = self.tx.send(request);
        async move {
            sent.map_err(|_| BackendError::Stopped)?;
            answer.await.map_err(|_| BackendError::Stopped)?
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH_FRAMES);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let mut bytes = first.frame.data.len();
        batch.push(first);
        while batch.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.frame.data.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        store(&inner, &mut batch).await;
    }
}

async fn store(inner: &Inner, batch: &mut Vec<Request>) {
    let cmds = batch
        .iter()
        .map(|r| match &r.target {
            Target::Session { key, require_owner } => {
                inner.append_cmd(key, &r.frame, *require_owner)
            }
            Target::Outbox => inner.outbox_put_cmd(&r.frame),
        })
        .collect();
    let mut redis = inner.redis.clone();
    match inner.scripts.run(&mut redis, cmds).await {
        Ok(answers) => {
            for (request, answer) in batch.drain(..).zip(answers) {
                let result = answer
                    .map_err(BackendError::from)
                    .and_then(|v| parse(&request.target, v, inner));
                let _ = request.reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, frames = batch.len(), "could not store frames in redis");
            for request in batch.drain(..) {
                let _ = request
                    .reply
                    .send(Err(BackendError::Redis(e.clone_mostly("storing frames"))));
            }
        }
    }
}

fn parse(target: &Target, answer: Value, inner: &Inner) -> Result<Appended, BackendError> {
    let (status, owner, dropped, _id, evicted): (i64, String, usize, String, u64) =
        redis::from_owned_redis_value(answer)?;
    let owner = (!owner.is_empty()).then_some(owner);
    Metrics::add(&inner.metrics.dedup_evicted, evicted);
    match (status, target) {
        (0, _) => Ok(Appended::NotConnected),
        (1, _) => Ok(Appended::Stored { owner, dropped }),
        (4, _) => Err(BackendError::Copy),
        (2, Target::Session { key, .. }) => Err(OverBudget::Twin {
            twin: key.twin,
            frames: inner.limits.twin.max_frames,
            bytes: inner.limits.twin.max_bytes,
        }
        .into()),
        (2, Target::Outbox) => Err(BackendError::OutboxFull {
            limits: inner.limits.outbox,
        }),
        _ => Err(OverBudget::Relay {
            frames: inner.limits.total.max_frames,
            bytes: inner.limits.total.max_bytes,
        }
        .into()),
    }
}

trait CloneMostly {
    fn clone_mostly(&self, what: &'static str) -> redis::RedisError;
}

impl CloneMostly for redis::RedisError {
    /// `RedisError` is not `Clone`; every caller of a failed pipeline gets its kind and
    /// text.
    fn clone_mostly(&self, what: &'static str) -> redis::RedisError {
        redis::RedisError::from((self.kind(), what, self.to_string()))
    }
}
