//! Federating from a durable outbox (Redis backend): [`federation::submit`] stores the
//! envelope in the backend's [`Outbox`] before the relay confirms it to the sender; this
//! worker takes entries as it has room, posts each with [`federation::deliver`] and
//! removes it once it was accepted or given up on. What this instance holds when it
//! dies is taken over by another instance; at a graceful stop it is left for the others
//! at once.
//!
//! An entry is removed before its sender is told it failed: a crash in between leaves
//! the sender without an answer (its own timeout tells it), never with an error for an
//! envelope that is delivered afterwards.
//!
//! [`federation::submit`]: crate::federation::submit
//! [`federation::deliver`]: crate::federation::deliver

use std::sync::Arc;
use std::time::Duration;

use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::Outbox;
use crate::federation;
use crate::mailbox::{Done, QueuedFrame};
use crate::metrics::Metrics;
use crate::route::{self, ReplyTo};
use crate::session_key::SessionKey;
use crate::state::{Refusal, RelayState};

/// Entries taken per round trip.
const TAKE: usize = 256;

/// Starts the worker on the relay's tracked tasks.
pub fn start(state: &Arc<RelayState>, outbox: Arc<dyn Outbox>) {
    state.tasks.spawn(run(state.clone(), outbox));
}

async fn run(state: Arc<RelayState>, outbox: Arc<dyn Outbox>) {
    // Entries held in this process at once: what waits beyond it waits in Redis.
    let room = Arc::new(Semaphore::new(
        state.config.federation_concurrency.saturating_mul(2).max(1),
    ));
    let mut backoff = Duration::from_millis(100);
    loop {
        let first = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            p = room.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut permits = vec![first];
        while permits.len() < TAKE {
            match room.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let taken = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            t = outbox.take(permits.len()) => t,
        };
        match taken {
            Ok(frames) => {
                backoff = Duration::from_millis(100);
                for (frame, permit) in frames.into_iter().zip(permits) {
                    let (state, outbox) = (state.clone(), outbox.clone());
                    state
                        .tasks
                        .clone()
                        .spawn(federate(state, outbox, frame, permit));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take federation work from redis, retrying");
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    outbox.leave().await;
}

/// Federates one entry; `_room` is its place among the entries held here.
async fn federate(
    state: Arc<RelayState>,
    outbox: Arc<dyn Outbox>,
    frame: QueuedFrame,
    _room: OwnedSemaphorePermit,
) {
    let Some(id) = frame.id else { return };
    let done = Done {
        id,
        len: frame.data.len(),
    };
    let failure = match attempt(&state, &frame).await {
        Attempt::Delivered => None,
        Attempt::Dropped => None,
        Attempt::Stopped => return,
        Attempt::Failed(reply_to, refusal) => Some((reply_to, refusal)),
    };
    if let Err(e) = outbox.done(done).await {
        tracing::warn!(error = %e, "could not remove federated work from redis: it will be posted again");
    }
    if let Some((reply_to, refusal)) = failure {
        tracing::info!(uid = %reply_to.uid, %refusal, "federation failed");
        let now = state.clock.now();
        state.refuse(&reply_to, &refusal, now).await;
    }
}

enum Attempt {
    Delivered,
    /// Nothing to do: expired, or not an envelope we could have stored.
    Dropped,
    /// The relay is stopping: leave the entry to another instance.
    Stopped,
    Failed(ReplyTo, Refusal),
}

async fn attempt(state: &Arc<RelayState>, frame: &QueuedFrame) -> Attempt {
    let Ok(header) = EnvelopeHeader::decode(frame.data.clone()) else {
        tracing::warn!("dropping an undecodable outbox entry");
        return Attempt::Dropped;
    };
    let Some(source) = header.source.as_ref() else {
        return Attempt::Dropped;
    };
    let reply_to = ReplyTo::of(&header, &SessionKey::of(source));
    let fwd = match route::forward(&header, &state.config.rules, state.clock.now()) {
        Ok(fwd) => fwd,
        Err(_) => {
            Metrics::inc(&state.metrics.expired);
            return Attempt::Dropped;
        }
    };
    let twin = match state.directory.twin(fwd.destination.twin).await {
        Ok(Some(twin)) => twin,
        Ok(None) => return Attempt::Failed(reply_to, Refusal::UnknownTwin(fwd.destination.twin)),
        Err(e) => return Attempt::Failed(reply_to, Refusal::Directory(e)),
    };
    match federation::deliver(state, &frame.data, &fwd, &twin.relays).await {
        Ok(()) => Attempt::Delivered,
        Err(_) if state.shutdown.is_cancelled() => Attempt::Stopped,
        Err(reason) => Attempt::Failed(reply_to, Refusal::FederationFailed(reason)),
    }
}
