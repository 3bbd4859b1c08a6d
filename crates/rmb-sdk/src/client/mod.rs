//! The client: a twin connected to its relays, making calls and serving handlers.
//!
//! By concern: `builder` configures and starts it, `call` sends requests and
//! waits for their replies, `inbound` checks and routes what the relays hand it;
//! this module holds the state they share and the way out (sealing, tracking for
//! re-sending, queueing for the relays).

mod builder;
mod call;
mod inbound;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use rmb_core::prost::Message as _;
use rmb_core::proto::{EnvelopeHeader, Message};
use rmb_core::rules::Rules;
use rmb_core::time::DEFAULT_TTL;
use rmb_core::{Address, Envelope, KeyType};
use rmb_registrar_client::{RegistrarClient, Twin};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

pub use builder::{
    relay_host, ClientBuilder, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_RESEND_AFTER,
};
pub use call::{Reply, RequestBuilder, DEFAULT_TIMEOUT};
pub use inbound::{reply_ttl, Event};

use call::Pending;

use crate::error::{SendError, Unconfirmed};
use crate::identity::Identity;
use crate::memory::{HashKey, Memory, ReplyKey};
use crate::outgoing::{self, Outgoing};
use crate::pool::{Outbound, Pool};
use crate::resend::{Deduplicators, Outstanding, Resend};
use crate::serve::{HandlerResult, Registry, Request};
use crate::tags;

/// An RMB twin connected to its relays: makes calls and serves handlers. Cheap to clone;
/// the connections close when the last clone is dropped (or on [`Client::shutdown`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

/// Cancels the background tasks when the last [`Client`] clone goes.
struct Guard(CancellationToken);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

struct Inner {
    address: Address,
    identity: Identity,
    registrar: RegistrarClient,
    pool: Pool,
    pending: DashMap<String, Pending>,
    handlers: Registry,
    unhandled: Option<mpsc::Sender<Event>>,
    /// What an envelope may hold, checked on everything received and sent.
    rules: Rules,
    /// What this receiver has seen and answered.
    memory: Arc<dyn Memory>,
    /// The key envelope and reply keys are hashed with (the memory's).
    hash_key: HashKey,
    /// The sources' public keys, parsed once rather than for every envelope.
    source_keys: rmb_core::identity::KeyCache,
    cancel: CancellationToken,
    /// One permit per incoming request being handled.
    request_slots: Arc<Semaphore>,
    /// Requests waiting for a slot (see [`Client::requests_waiting`]).
    requests: mpsc::Sender<Bytes>,
    /// Who gets copies of late requests.
    resend: Resend,
    /// Requests sent and not yet answered; `None` when re-sending is off.
    outstanding: Option<Mutex<Outstanding>>,
    /// Receivers known to drop copies.
    deduplicators: Mutex<Deduplicators>,
    /// The origin of the monotonic milliseconds `outstanding` is scheduled in.
    started: Instant,
    /// Copies of unanswered requests sent (see [`Client::requests_resent`]).
    resent: std::sync::atomic::AtomicU64,
}

/// An envelope handed to the relays by [`RequestBuilder::send`] or [`Client::send`].
#[derive(Debug)]
pub struct Sent {
    uid: String,
    deadline: u64,
    confirmed: oneshot::Receiver<Result<(), Unconfirmed>>,
}

impl Sent {
    /// The envelope's uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Resolves once a relay confirmed the envelope (the pong to the ping written after
    /// it: the relay has accepted it and routes or queues it), or says why no relay did:
    /// it expired first, the link it was written on broke where a copy could run twice
    /// (so it was not sent again), or the client shut down. Waits at most until a
    /// second after the envelope's deadline.
    pub async fn confirmed(self) -> Result<(), Unconfirmed> {
        let left = self.deadline.saturating_sub(rmb_core::time::now());
        let grace = Duration::from_secs(left.saturating_add(1));
        match tokio::time::timeout(grace, self.confirmed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unconfirmed::Closed),
            Err(_) => Err(Unconfirmed::Expired),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.address)
            .field("connected", &self.inner.pool.connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client for the twin of `secret` (a mnemonic or `0x` seed).
    pub fn builder(secret: impl Into<String>, key_type: KeyType) -> ClientBuilder {
        ClientBuilder::new(secret.into(), key_type)
    }

    /// Incoming requests received but waiting for a free slot (see
    /// [`ClientBuilder::max_concurrent_requests`]): a measure of how far behind the
    /// handlers are.
    pub fn requests_waiting(&self) -> usize {
        let queue = &self.inner.requests;
        queue.max_capacity() - queue.capacity()
    }

    /// Copies of unanswered requests sent again since start ([`Resend`]): rising fast,
    /// it means replies are not coming back (a receiver down, or replies lost).
    pub fn requests_resent(&self) -> u64 {
        self.inner.resent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This client's twin id.
    pub fn twin_id(&self) -> u32 {
        self.inner.address.twin
    }

    /// This client's address (twin and session).
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The registrar client this client looks twins up with (and caches them in).
    pub fn registrar(&self) -> &RegistrarClient {
        &self.inner.registrar
    }

    /// How many relays are connected right now.
    pub fn connected_relays(&self) -> usize {
        self.inner.pool.connected()
    }

    /// Waits until at least `relays` relays are connected; false on timeout.
    pub async fn wait_connected(&self, relays: usize, timeout: Duration) -> bool {
        self.inner.pool.wait_connected(relays, timeout).await
    }

    /// Serves `command` with `handler` (replacing any earlier handler for it). The
    /// handler's body is the reply; its [`HandlerError`] becomes an error reply, and so
    /// does a panic.
    pub fn handle<F, Fut>(&self, command: impl Into<String>, handler: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.inner.handlers.insert(command, handler);
    }

    /// Stops serving `command`; true if it had a handler.
    pub fn unhandle(&self, command: &str) -> bool {
        self.inner.handlers.remove(command)
    }

    /// Sends an envelope built by hand: encrypts it (when the destination has an e2e
    /// key), stamps, signs and queues it for the relays. Returns once it is queued, with
    /// a handle that tells when a relay confirmed it ([`Sent::confirmed`]). Replies are
    /// tagged `dedup` (we drop copies of requests we have seen).
    ///
    /// For gateways that pass on envelopes someone else addressed (rmb-peer); an
    /// application uses [`Client::request`], which picks the uid and source itself.
    pub async fn send(&self, out: Outgoing) -> Result<Sent, SendError> {
        self.inner.send(out).await
    }

    /// Stops the connections and background tasks (also done when the last clone drops).
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

impl Inner {
    async fn send(&self, mut out: Outgoing) -> Result<Sent, SendError> {
        if matches!(out.message, Message::Response(_) | Message::Error(_)) {
            out.tags = tags::with(out.tags.take(), tags::DEDUP);
        }
        let twin = self.lookup(out.destination.twin).await?;
        let shared = self
            .identity
            .shared_key(&twin)
            .map_err(|source| SendError::Encryption {
                twin: twin.twin_id,
                source,
            })?;
        let now = rmb_core::time::now();
        let env = outgoing::seal(out, self.identity.signer(), shared.as_ref(), now);
        // Refused here with the reason rather than by the relay or the receiver.
        self.rules
            .check_envelope(&env, now)
            .map_err(SendError::Invalid)?;
        self.send_envelope(&env).await
    }

    async fn send_envelope(&self, env: &Envelope) -> Result<Sent, SendError> {
        let frame: Bytes = env.encode_to_vec().into();
        if frame.len() > rmb_core::rules::MAX_MESSAGE_SIZE {
            return Err(SendError::TooLarge {
                size: frame.len(),
                max: rmb_core::rules::MAX_MESSAGE_SIZE,
            });
        }
        let deadline = env.timestamp.saturating_add(env.expiration);
        let copy_safe = match (&env.message, env.destination.as_ref()) {
            (Some(Message::Request(_)), Some(to)) => {
                if let Some(outstanding) = &self.outstanding {
                    let kept = outstanding.lock().track(
                        env.uid.clone(),
                        to.clone(),
                        frame.clone(),
                        deadline,
                        self.now_ms(),
                    );
                    if !kept {
                        tracing::warn!(
                            uid = env.uid,
                            "too many unanswered requests kept: this one will not be sent again"
                        );
                    }
                }
                self.resend == Resend::Always || self.deduplicators.lock().knows(to, self.now_ms())
            }
            (Some(Message::Response(_) | Message::Error(_)), Some(to)) => {
                // Kept before it goes, so a copy of the request arriving next finds it.
                let key = ReplyKey::of(to, &self.address, &env.uid, &self.hash_key);
                let now = rmb_core::time::now();
                if let Err(e) = self
                    .memory
                    .keep_reply(key, frame.clone(), deadline, now)
                    .await
                {
                    tracing::warn!(
                        uid = env.uid,
                        "a copy of this request will get no reply: {e}"
                    );
                }
                true
            }
            _ => true,
        };
        let (confirm, confirmed) = oneshot::channel();
        let out = Outbound::new(frame, deadline, copy_safe).confirmed_to(confirm);
        self.pool.send(out).await.map_err(|_| SendError::Closed)?;
        Ok(Sent {
            uid: env.uid.clone(),
            deadline,
            confirmed,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The reply already sent for request `uid` from `requester`, sent once more: the
    /// requester is re-sending because it did not get it.
    async fn resend_reply(&self, request: &Envelope) {
        let uid = &request.uid;
        let key = ReplyKey::for_request(request, &self.hash_key);
        let frame = match self.memory.reply(key, rmb_core::time::now()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => return tracing::warn!(uid, "cannot answer a copy of a request: {e}"),
        };
        // Signed again: the relay dropped the first as a copy if it ever saw it.
        let now = rmb_core::time::now();
        let Some(frame) = outgoing::resign(&frame, self.identity.signer(), now) else {
            return tracing::debug!(uid, "the reply kept for a request has expired");
        };
        let Ok(header) = EnvelopeHeader::decode(frame.clone()) else {
            return tracing::warn!(uid, "the reply kept for a request does not decode");
        };
        let deadline = header.timestamp.saturating_add(header.expiration);
        tracing::debug!(
            uid,
            "answering a copy of a request with the reply already sent"
        );
        let _ = self.pool.send(Outbound::new(frame, deadline, true)).await;
    }

    /// A reply (or relay error) for request `uid` arrived: stop re-sending it. True if
    /// it answers a request kept for re-sending.
    fn settled(&self, uid: &str, twin: Option<u32>) -> bool {
        let Some(outstanding) = &self.outstanding else {
            return false;
        };
        let mut outstanding = outstanding.lock();
        match twin {
            Some(twin) => outstanding.answered(uid, twin),
            None => {
                outstanding.refused(uid);
                true
            }
        }
    }

    async fn lookup(&self, twin: u32) -> Result<Arc<Twin>, SendError> {
        match self.registrar.get_twin(twin).await {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(SendError::UnknownTwin(twin)),
            Err(e) => Err(SendError::Registrar(e)),
        }
    }

    /// Answers a request with an error (best effort: failures are logged).
    async fn reply_error(&self, to: Address, uid: String, code: u32, message: String) {
        let reply = Outgoing::error(
            uid,
            self.address.clone(),
            to,
            code,
            message,
            Some(outgoing::DEFAULT_SCHEMA.into()),
            DEFAULT_TTL,
        );
        if let Err(e) = self.send(reply).await {
            tracing::debug!("could not send an error reply: {e}");
        }
    }

    /// Hands an event to the application; false if it did not ask for them.
    async fn forward(&self, event: Event) -> bool {
        match &self.unhandled {
            Some(tx) => tx.send(event).await.is_ok(),
            None => false,
        }
    }
}

/// Sends again the requests that have waited too long for their replies.
async fn resend_loop(inner: Arc<Inner>, after: Duration) {
    let Some(outstanding) = &inner.outstanding else {
        return;
    };
    // Checking four times per interval keeps the extra wait under a quarter of it.
    let mut tick =
        tokio::time::interval((after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.cancel.cancelled() => return,
        }
        let now_ms = inner.now_ms();
        let due = outstanding.lock().due(now_ms, rmb_core::time::now(), |to| {
            let known = inner.deduplicators.lock().knows(to, now_ms);
            inner.resend.allows(known)
        });
        if !due.is_empty() {
            tracing::debug!(
                count = due.len(),
                "re-sending requests still without a reply"
            );
        }
        for (frame, deadline) in due {
            let Some(frame) =
                outgoing::resign(&frame, inner.identity.signer(), rmb_core::time::now())
            else {
                continue;
            };
            // Only receivers that drop copies get these, so any link may carry them.
            let copy = Outbound::new(frame, deadline, true);
            if inner.pool.send(copy).await.is_err() {
                return;
            }
            inner
                .resent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
