//! The relay's shared state and the routing step every envelope goes through, whether
//! it came from a local session or from another relay.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use bytes::Bytes;
use rmb_core::prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, BackendError};
use crate::config::Config;
use crate::directory::{DirectoryError, TwinDirectory, TwinRecord};
use crate::mailbox::QueuedFrame;
use crate::metrics::Metrics;
use crate::ranker::Ranker;
use crate::ratelimit::RateLimiter;
use crate::route::{self, Forward};
use crate::session_key::SessionKey;

pub struct RelayState {
    pub config: Config,
    pub directory: Arc<dyn TwinDirectory>,
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
    pub limiter: RateLimiter,
    pub ranker: Ranker,
    pub http: reqwest::Client,
    pub federation_slots: Arc<Semaphore>,
    pub federation_pending: AtomicUsize,
    pub next_connection: AtomicU64,
    pub clock: crate::clock::CoarseClock,
    pub open_connections: AtomicUsize,
    /// Cancelled when the relay shuts down: every connection closes.
    pub shutdown: CancellationToken,
    /// Connection and federation tasks, awaited at shutdown.
    pub tasks: TaskTracker,
}

/// Where an envelope went.
#[derive(Debug)]
pub enum Dispatched {
    /// Handed to the connected destination session.
    Delivered,
    /// Queued until the destination connects.
    Queued,
    /// The destination lives on other relays: federate to these.
    Elsewhere(Arc<TwinRecord>),
}

/// Why an envelope could not be routed; the text goes back to the sender.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("twin {0} is not registered")]
    UnknownTwin(u32),
    #[error("destination {0} is offline (fail-fast)")]
    Offline(SessionKey),
    #[error("cannot look up the destination twin: {0}")]
    Directory(#[from] DirectoryError),
    #[error("relay storage error: {0}")]
    Backend(#[from] BackendError),
}

impl RelayState {
    /// Routes one envelope (§3.2): to the connected session, else by the destination
    /// twin's registered relays to a queue here or to federation.
    pub async fn dispatch(&self, fwd: &Forward, frame: Bytes) -> Result<Dispatched, DispatchError> {
        let frame = QueuedFrame::new(frame, fwd.deadline);
        if self
            .backend
            .deliver_connected(&fwd.destination, &frame)
            .await?
        {
            return Ok(Dispatched::Delivered);
        }
        let twin_id = fwd.destination.twin;
        let twin = self
            .directory
            .twin(twin_id)
            .await?
            .ok_or(DispatchError::UnknownTwin(twin_id))?;
        if !route::lives_here(&twin.relays, &self.config.domains) {
            return Ok(Dispatched::Elsewhere(twin));
        }
        if fwd.fail_fast {
            return Err(DispatchError::Offline(fwd.destination.clone()));
        }
        self.backend.enqueue(&fwd.destination, frame).await?;
        Ok(Dispatched::Queued)
    }

    /// Sends a relay error envelope for `uid` to a session of this relay.
    pub async fn send_relay_error(&self, to: &SessionKey, uid: &str, message: String) {
        let now = rmb_core::time::now();
        tracing::debug!(session = %to, uid, %message, "sending relay error");
        let env = route::error_envelope(uid, to, message, now);
        let frame = QueuedFrame::new(
            Bytes::from(env.encode_to_vec()),
            now + route::ERROR_EXPIRATION,
        );
        let result = match self.backend.deliver_connected(to, &frame).await {
            Ok(true) => Ok(()),
            Ok(false) => self.backend.enqueue(to, frame).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(session = %to, uid, error = %e, "could not send a relay error");
        }
    }
}
