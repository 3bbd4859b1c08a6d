//! The client: identity, registrar, relay pool, calls in flight and handlers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::FutureExt;
use parking_lot::Mutex;
use rmb_core::peer_api::ErrorCode;
use rmb_core::prost::Message as _;
use rmb_core::proto::{EnvelopeHeader, Message, MessageKind};
use rmb_core::rules::{self, Rules};
use rmb_core::time::DEFAULT_TTL;
use rmb_core::{Address, Envelope, KeyType};
use rmb_registrar_client::{RegistrarClient, Twin};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{BuildError, CallError, HandlerError, SendError, Unconfirmed};
use crate::identity::Identity;
use crate::incoming::{self, Classified, Incoming, Kind, Rejection};
use crate::memory::{self, EnvelopeKeys, HashKey, InMemory, Memory, ReplyKey};
use crate::outgoing::{self, Outgoing};
use crate::pool::{Outbound, Pool, PoolConfig};
use crate::resend::{Deduplicators, Outstanding, Resend};
use crate::serve::{HandlerResult, Registry, Request};
use crate::tags;

/// Something the client received that no call or handler took: handed to the
/// application when it asked for them ([`ClientBuilder::unhandled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A verified request for a command without a handler.
    Request(Incoming),
    /// A verified reply (response or error) that matches no call in flight.
    Reply(Incoming),
    /// A relay could not route the request with this uid.
    RelayError { uid: String, message: String },
}

/// Configures and starts a [`Client`].
pub struct ClientBuilder {
    secret: String,
    key_type: KeyType,
    registrar_url: Option<String>,
    registrar: Option<RegistrarClient>,
    relays: Vec<String>,
    session: Option<String>,
    no_update: bool,
    e2e: bool,
    pool: PoolConfig,
    unhandled: Option<mpsc::Sender<Event>>,
    max_concurrent_requests: usize,
    resend: Resend,
    resend_interval: Duration,
    memory: Option<Arc<dyn Memory>>,
    rules: Rules,
}

/// Default wait before a request with no reply is sent again, where the [`Resend`]
/// policy allows (see [`ClientBuilder::resend_interval`]).
pub const DEFAULT_RESEND_AFTER: Duration = Duration::from_secs(5);

/// How long a receiver is believed to drop copies after its last reply that said so.
const DEDUPLICATOR_TTL: Duration = Duration::from_secs(3600);
/// Receivers remembered as dropping copies, at most.
const DEDUPLICATORS: usize = 65_536;
/// Bytes of unanswered requests kept for sending again, at most.
const OUTSTANDING_BYTES: usize = 64 << 20;

/// Default cap on incoming requests handled at once (see
/// [`ClientBuilder::max_concurrent_requests`]).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

impl ClientBuilder {
    /// The registrar's base URL (`http(s)://host[:port]`).
    pub fn registrar(mut self, url: impl Into<String>) -> Self {
        self.registrar_url = Some(url.into());
        self
    }

    /// A ready registrar client (e.g. with its own cache settings) instead of a URL.
    pub fn registrar_client(mut self, client: RegistrarClient) -> Self {
        self.registrar = Some(client);
        self
    }

    /// The relays to connect to (`ws://` or `wss://` URLs); the account's `relays` are
    /// set to their `host[:port]`.
    pub fn relays<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.relays = urls.into_iter().map(Into::into).collect();
        self
    }

    /// A session id, for an extra connection of the same twin (§3.1). `None` is the
    /// twin's default session.
    pub fn session(mut self, sid: Option<String>) -> Self {
        self.session = sid;
        self
    }

    /// Leave the registrar record alone (no create, no update).
    pub fn no_update(mut self, no_update: bool) -> Self {
        self.no_update = no_update;
        self
    }

    /// Derive and register an e2e key (default on). Off: payloads to and from this twin
    /// travel in plain text.
    pub fn e2e(mut self, on: bool) -> Self {
        self.e2e = on;
        self
    }

    /// Connection timing (backoff, pings).
    pub fn pool_config(mut self, config: PoolConfig) -> Self {
        self.pool = config;
        self
    }

    /// Where requests without a handler and replies without a call go (instead of an
    /// "unknown command" answer and a log line).
    pub fn unhandled(mut self, events: mpsc::Sender<Event>) -> Self {
        self.unhandled = Some(events);
        self
    }

    /// How many incoming requests are handled at once (default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`]). As many more wait in a queue; beyond that a
    /// request is answered at once with a "busy" error (code 500; at most 16 such
    /// answers are in progress at once, further requests are dropped unanswered), so a
    /// flood costs bounded memory and tasks and its senders learn why. Replies are never
    /// held back by this cap (they have 64 checkers of their own; when those are busy,
    /// reading from the relays waits): a handler that itself calls another twin always
    /// gets its answer. Zero is taken as one.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }

    /// Which receivers get the same request again when its reply is late (default
    /// [`Resend::KnownReceivers`]). This is what recovers a request a relay accepted and
    /// then lost (e.g. it stopped before passing it on); a receiver that drops copies
    /// answers a copy of a request it has seen with the reply it already sent, but one
    /// that does not (the original rmb-peer, the Go router, the TypeScript client) runs
    /// it again. See docs/compatibility.md, "Not running a request twice".
    pub fn resend(mut self, policy: Resend) -> Self {
        self.resend = policy;
        self
    }

    /// How long to wait for a reply before the first copy (then twice as long, and so
    /// on, until the request expires). Default [`DEFAULT_RESEND_AFTER`].
    pub fn resend_interval(mut self, interval: Duration) -> Self {
        self.resend_interval = interval;
        self
    }

    /// Where this receiver remembers the envelopes it has seen and the replies it sent
    /// (default: an [`InMemory`] with [`MemoryLimits::default`](crate::MemoryLimits)).
    /// A memory that survives restarts (rmb-peer keeps it in Redis) means a restarted
    /// receiver neither runs a copy again nor leaves it unanswered.
    pub fn memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// What an envelope may hold (default [`Rules::default`], set from what the
    /// existing clients send): incoming envelopes outside them are refused (a request
    /// with an error reply saying which field and limit), outgoing ones are not sent
    /// ([`SendError::Invalid`]).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Makes sure the account exists and lists these relays and the e2e key (unless
    /// `no_update`), then starts connecting to every relay. Does not wait for the
    /// connections: see [`Client::wait_connected`].
    pub async fn build(self) -> Result<Client, BuildError> {
        if self.relays.is_empty() {
            return Err(BuildError::NoRelay);
        }
        if self.session.as_deref() == Some("") {
            return Err(BuildError::EmptySession);
        }
        let hosts = self
            .relays
            .iter()
            .map(|url| relay_host(url).ok_or_else(|| BuildError::BadRelayUrl(url.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let registrar = match (self.registrar, self.registrar_url) {
            (Some(client), _) => client,
            (None, Some(url)) => RegistrarClient::new(&url)?,
            (None, None) => return Err(BuildError::NoRegistrar),
        };
        let identity = Identity::from_secret(&self.secret, self.key_type, self.e2e)?;
        let twin = if self.no_update {
            registrar
                .get_twin_by_public_key(&identity.signer().public_key())
                .await?
                .ok_or(BuildError::NotRegistered)?
        } else {
            registrar
                .ensure_account(identity.signer(), &hosts, identity.e2e_public_key())
                .await?
        };
        tracing::info!(twin = twin.twin_id, relays = ?hosts, "twin ready");
        let address = Address {
            twin: twin.twin_id,
            connection: self.session.clone(),
        };
        let memory = self.memory.unwrap_or_else(|| Arc::new(InMemory::default()));
        let cancel = CancellationToken::new();
        let (incoming_tx, incoming_rx) = mpsc::channel(1024);
        let (requests_tx, requests_rx) = mpsc::channel(self.max_concurrent_requests);
        let pool = Pool::start(
            &self.relays,
            twin.twin_id,
            self.session,
            identity.signer().clone(),
            self.pool,
            incoming_tx,
            cancel.clone(),
        );
        let inner = Arc::new(Inner {
            address,
            identity,
            registrar,
            pool,
            pending: DashMap::new(),
            handlers: Registry::default(),
            unhandled: self.unhandled,
            rules: self.rules,
            hash_key: memory.hash_key(),
            memory,
            cancel: cancel.clone(),
            request_slots: Arc::new(Semaphore::new(self.max_concurrent_requests)),
            requests: requests_tx,
            resend: self.resend,
            outstanding: (self.resend != Resend::Off)
                .then(|| Mutex::new(Outstanding::new(self.resend_interval, OUTSTANDING_BYTES))),
            deduplicators: Mutex::new(Deduplicators::new(DEDUPLICATOR_TTL, DEDUPLICATORS)),
            started: Instant::now(),
        });
        if inner.outstanding.is_some() {
            tokio::spawn(resend_loop(inner.clone(), self.resend_interval));
        }
        tokio::spawn(dispatch(inner.clone(), incoming_rx));
        tokio::spawn(run_requests(inner.clone(), requests_rx));
        Ok(Client {
            inner,
            _guard: Arc::new(Guard(cancel)),
        })
    }
}

/// The `host[:port]` of a `ws://` or `wss://` URL (what the registrar lists as a relay).
pub fn relay_host(url: &str) -> Option<String> {
    let rest = url
        .trim()
        .strip_prefix("wss://")
        .or_else(|| url.trim().strip_prefix("ws://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_string())
}

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
}

/// An envelope handed to the relays by [`Client::send`].
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

/// A call waiting for its reply.
struct Pending {
    twin: u32,
    reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
}

/// Removes a pending call when the caller stops waiting.
/// Removes a pending call when the caller stops waiting, and stops re-sending it.
struct PendingGuard<'a> {
    inner: &'a Inner,
    uid: String,
    twin: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.remove(&self.uid);
        if let Some(outstanding) = &self.inner.outstanding {
            outstanding.lock().answered(&self.uid, self.twin);
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
        ClientBuilder {
            secret: secret.into(),
            key_type,
            registrar_url: None,
            registrar: None,
            relays: Vec::new(),
            session: None,
            no_update: false,
            e2e: true,
            pool: PoolConfig::default(),
            unhandled: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            resend: Resend::default(),
            resend_interval: DEFAULT_RESEND_AFTER,
            memory: None,
            rules: Rules::default(),
        }
    }

    /// Incoming requests received but waiting for a free slot (see
    /// [`ClientBuilder::max_concurrent_requests`]): a measure of how far behind the
    /// handlers are.
    pub fn requests_waiting(&self) -> usize {
        let queue = &self.inner.requests;
        queue.max_capacity() - queue.capacity()
    }

    /// This client's twin id.
    pub fn twin_id(&self) -> u32 {
        self.inner.address.twin
    }

    /// This client's address (twin and session).
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

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

    /// Calls `command` on `twin`'s default session and waits up to `timeout` for the
    /// reply's body.
    pub async fn call(
        &self,
        twin: u32,
        command: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        // The request lives as long as the caller waits, but never longer than receivers
        // remember uids (MAX_TTL): past that, a relay could replay it as new.
        let expiration =
            (timeout.as_secs_f64().ceil().max(1.0) as u64).min(rmb_core::time::MAX_TTL);
        let request = Outgoing::request(
            uuid::Uuid::new_v4().to_string(),
            self.inner.address.clone(),
            Address::twin(twin),
            command,
            payload,
            expiration,
        );
        self.call_with(request, timeout).await
    }

    /// Sends a request built by the caller (any destination session, schema, tags,
    /// expiration) and waits up to `timeout` for the reply's body.
    pub async fn call_with(
        &self,
        request: Outgoing,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let uid = request.uid.clone();
        let twin = request.destination.twin;
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .insert(uid.clone(), Pending { twin, reply: tx });
        let _guard = PendingGuard {
            inner: &self.inner,
            uid,
            twin,
        };
        let work = async {
            let sent = self.send(request).await?;
            let mut rx = rx;
            tokio::select! {
                reply = &mut rx => return reply.map_err(|_| CallError::NotConnected)?,
                confirmed = sent.confirmed() => match confirmed {
                    Ok(()) => {}
                    Err(Unconfirmed::Closed) => return Err(CallError::NotConnected),
                    Err(e) => return Err(CallError::Unconfirmed(e)),
                },
            }
            rx.await.map_err(|_| CallError::NotConnected)?
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// Encrypts (when the destination has an e2e key), stamps, signs and queues an
    /// envelope for the relays. Returns once it is queued, with a handle that tells when
    /// a relay confirmed it ([`Sent::confirmed`]). Replies are tagged `dedup` (we drop
    /// copies of requests we have seen).
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
            .map_err(|e| SendError::Encryption {
                twin: twin.twin_id,
                message: e.to_string(),
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
            Err(e) => Err(SendError::Registrar(e.to_string())),
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

/// Replies (and relay errors) checked at once, at most: each may wait for a registrar
/// lookup. When all are busy, reading waits, so a flood is read at the pace it can be
/// checked and the relay holds the rest (its queues are bounded and it drops from them).
const REPLY_WORKERS: usize = 64;
/// "Busy" refusals being sent at once, at most; beyond it a request that finds the
/// queue full is dropped without an answer (its sender times out).
const BUSY_REFUSALS: usize = 16;

/// Reads incoming frames and hands each to a bounded set of tasks. Replies and relay
/// errors are checked by at most [`REPLY_WORKERS`] tasks at once. Requests go through a
/// bounded queue to [`run_requests`], which runs at most `max_concurrent_requests` of
/// them at a time; when that queue is full too, the request is answered with a "busy"
/// error (at most [`BUSY_REFUSALS`] at once, beyond that it is dropped). This loop
/// itself never waits for a handler: a handler that calls another twin must get its
/// reply through here.
async fn dispatch(inner: Arc<Inner>, mut frames: mpsc::Receiver<Bytes>) {
    let replies = Arc::new(Semaphore::new(REPLY_WORKERS));
    let refusals = Arc::new(Semaphore::new(BUSY_REFUSALS));
    loop {
        let frame = tokio::select! {
            f = frames.recv() => f,
            _ = inner.cancel.cancelled() => None,
        };
        let Some(frame) = frame else {
            // Fail calls still waiting rather than leaving them to time out.
            inner.pending.clear();
            return;
        };
        if is_request(&frame) {
            match inner.requests.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    let Ok(permit) = refusals.clone().try_acquire_owned() else {
                        tracing::warn!("too many requests and refusals in progress: dropping one");
                        continue;
                    };
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        refuse_busy(&inner, frame).await;
                        drop(permit);
                    });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            continue;
        }
        let permit = tokio::select! {
            permit = replies.clone().acquire_owned() => permit.expect("never closed"),
            _ = inner.cancel.cancelled() => continue,
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            handle_frame(&inner, frame).await;
            drop(permit);
        });
    }
}

/// Runs queued requests, each in its own task, no more than the slots allow at once.
/// A slot is taken before a request is, so what waits for one stays in the queue
/// (where [`Client::requests_waiting`] counts it).
async fn run_requests(inner: Arc<Inner>, mut requests: mpsc::Receiver<Bytes>) {
    loop {
        let slot = tokio::select! {
            slot = inner.request_slots.clone().acquire_owned() => {
                slot.expect("the semaphore is never closed")
            }
            _ = inner.cancel.cancelled() => return,
        };
        let frame = tokio::select! {
            f = requests.recv() => f,
            _ = inner.cancel.cancelled() => None,
        };
        let Some(frame) = frame else { return };
        let inner = inner.clone();
        tokio::spawn(async move {
            handle_frame(&inner, frame).await;
            drop(slot);
        });
    }
}

/// Answers a request that found every slot and the queue full. The relay has already
/// checked that the source is who it claims, so the error goes back unverified.
async fn refuse_busy(inner: &Inner, frame: Bytes) {
    let Ok(env) = Envelope::decode(frame) else {
        return;
    };
    let Some(source) = env.source else { return };
    tracing::warn!(uid = env.uid, %source, "too many requests in progress: refusing one");
    inner
        .reply_error(
            source,
            env.uid,
            ErrorCode::Other.code(),
            "busy: too many requests in progress, try again later".into(),
        )
        .await;
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
        }
    }
}

/// Whether a frame carries a request (a cheap header-only decode; anything that does not
/// decode is left to `handle_frame` to report).
fn is_request(frame: &Bytes) -> bool {
    matches!(
        EnvelopeHeader::decode(frame.clone()),
        Ok(EnvelopeHeader {
            kind: Some(MessageKind::Request(_)),
            ..
        })
    )
}

async fn handle_frame(inner: &Arc<Inner>, frame: Bytes) {
    let env = match Envelope::decode(frame) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!("dropping an undecodable envelope: {e}");
            return;
        }
    };
    let (source, is_request) = match incoming::classify(&env) {
        Ok(Classified::Pong | Classified::Ping) => return,
        Ok(Classified::RelayError { uid, message }) => {
            if let Err(violation) = inner.rules.check_envelope(&env, rmb_core::time::now()) {
                return tracing::warn!(uid, "dropping a relay error: {violation}");
            }
            inner.settled(&uid, None);
            if let Some((_, call)) = inner.pending.remove(&uid) {
                let _ = call.reply.send(Err(CallError::Relay(message)));
            } else if !inner
                .forward(Event::RelayError {
                    uid: uid.clone(),
                    message: message.clone(),
                })
                .await
            {
                tracing::debug!(uid, "relay error for no call in flight: {message}");
            }
            return;
        }
        Ok(Classified::Signed { source, is_request }) => (source, is_request),
        Err(rejection) => {
            tracing::warn!(uid = env.uid, "dropping an incoming envelope: {rejection}");
            return;
        }
    };
    let reply_to = env.source.clone().unwrap_or_default();
    let uid = env.uid.clone();
    match verify(inner, env, source).await {
        Ok(Some(msg)) => deliver(inner, msg).await,
        Ok(None) => {}
        Err(rejection) => {
            tracing::warn!(uid, source, "refused an incoming envelope: {rejection}");
            if is_request {
                inner
                    .reply_error(reply_to, uid, rejection.code.code(), rejection.message)
                    .await;
            } else if let Some((_, call)) = inner.pending.remove_if(&uid, |_, p| p.twin == source) {
                let _ = call
                    .reply
                    .send(Err(CallError::Verification(rejection.message)));
            }
        }
    }
}

/// Checks a signed envelope; `Ok(None)` for a duplicate.
async fn verify(inner: &Inner, env: Envelope, source: u32) -> Result<Option<Incoming>, Rejection> {
    let now = rmb_core::time::now();
    // Shapes, lengths and times first: they need no registrar lookup.
    inner
        .rules
        .check_envelope(&env, now)
        .map_err(incoming::refused)?;
    let lookup = |fresh: bool| async move {
        if fresh {
            inner.registrar.invalidate(source);
        }
        match inner.registrar.get_twin(source).await {
            Ok(Some(twin)) => Ok(twin),
            Ok(None) => Err(Rejection::new(
                ErrorCode::UnknownTwin,
                format!("twin {source} is not registered"),
            )),
            Err(e) => Err(Rejection::new(
                ErrorCode::Other,
                format!("cannot look up twin {source}: {e}"),
            )),
        }
    };
    let mut twin = lookup(false).await?;
    if let Err(rejection) = incoming::verify(&env, &twin.public_key, now) {
        if rejection.code != ErrorCode::BadSignature {
            return Err(rejection);
        }
        // The twin may have changed keys since we cached it: ask once more.
        twin = lookup(true).await?;
        incoming::verify(&env, &twin.public_key, now)?;
    }
    // Several shifts move bytes into the destination's session id or twin, and a
    // relay may deliver the result anywhere: only what is addressed to us exactly.
    rules::check_destination(&env, &inner.address).map_err(incoming::refused)?;
    let keys = EnvelopeKeys::of(&env, &inner.hash_key);
    let until = memory::remember_until(&env, now);
    let is_request = matches!(env.message, Some(Message::Request(_)));
    let fresh = match inner.memory.first_time(keys, until, now).await {
        Ok(fresh) => fresh,
        // Better an error than a second run; a reply is delivered all the same.
        Err(e) if is_request => {
            return Err(Rejection::new(
                ErrorCode::Other,
                format!("cannot tell whether this request was already handled: {e}"),
            ))
        }
        Err(e) => {
            tracing::warn!(uid = env.uid, source, "{e}");
            true
        }
    };
    if !fresh {
        tracing::debug!(uid = env.uid, source, "dropping a duplicate envelope");
        if is_request {
            inner.resend_reply(&env).await;
        }
        return Ok(None);
    }
    let shared = inner
        .identity
        .shared_key(&twin)
        .map_err(|e| Rejection::new(ErrorCode::E2e, e.to_string()))?;
    incoming::open(env, shared.as_ref()).map(Some)
}

async fn deliver(inner: &Arc<Inner>, msg: Incoming) {
    match &msg.kind {
        Kind::Request { command } => {
            if let Some(handler) = inner.handlers.get(command) {
                let request = Request::from_incoming(msg).expect("a request");
                serve(inner, handler, request).await;
            } else {
                let (to, uid, command) = (msg.source.clone(), msg.uid.clone(), command.clone());
                if !inner.forward(Event::Request(msg)).await {
                    inner
                        .reply_error(
                            to,
                            uid,
                            ErrorCode::Other.code(),
                            format!("unknown command: {command}"),
                        )
                        .await;
                }
            }
        }
        Kind::Response | Kind::Error { .. } => {
            let source = msg.source.twin;
            let kept = inner.settled(&msg.uid, Some(source));
            let call = inner.pending.remove_if(&msg.uid, |_, p| p.twin == source);
            // Learned only from answers to our own requests, so strangers cannot fill
            // the table.
            if (kept || call.is_some()) && tags::has(msg.tags.as_deref(), tags::DEDUP) {
                inner
                    .deduplicators
                    .lock()
                    .learned(&msg.source, inner.now_ms());
            }
            if let Some((_, call)) = call {
                let result = match msg.kind {
                    Kind::Error { code, message } => Err(CallError::Remote { code, message }),
                    _ => Ok(msg.payload),
                };
                let _ = call.reply.send(result);
            } else {
                let uid = msg.uid.clone();
                if !inner.forward(Event::Reply(msg)).await {
                    tracing::debug!(uid, source, "reply for no call in flight");
                }
            }
        }
    }
}

/// Runs a handler, catching panics, and sends its reply.
async fn serve(inner: &Arc<Inner>, handler: crate::serve::Handler, request: Request) {
    let (to, uid, schema, command) = (
        request.source.clone(),
        request.uid.clone(),
        request.schema.clone(),
        request.command.clone(),
    );
    let deadline = request.timestamp.saturating_add(request.expiration);
    let result = match AssertUnwindSafe(handler(request)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(command, "handler panicked: {what}");
            Err(HandlerError::other(format!(
                "the handler for {command} failed"
            )))
        }
    };
    let ttl = reply_ttl(deadline, rmb_core::time::now());
    let reply = match result {
        Ok(body) => Outgoing::response(uid, inner.address.clone(), to, body, schema, ttl),
        Err(e) => Outgoing::error(
            uid,
            inner.address.clone(),
            to,
            e.code,
            e.message,
            schema,
            ttl,
        ),
    };
    if let Err(e) = inner.send(reply).await {
        tracing::warn!(command, "could not send the reply: {e}");
    }
}

/// A reply's lifetime: what is left of its request's (after that the caller has stopped
/// waiting), at least a second, and never more than [`DEFAULT_TTL`]. Short-lived replies
/// keep the caller's de-duplication memory and our reply cache small.
pub fn reply_ttl(request_deadline: u64, now: u64) -> u64 {
    request_deadline.saturating_sub(now).clamp(1, DEFAULT_TTL)
}

#[cfg(test)]
mod tests {
    use super::{relay_host, reply_ttl, DEFAULT_TTL};

    #[test]
    fn replies_live_as_long_as_their_request_still_does() {
        assert_eq!(reply_ttl(1060, 1000), 60);
        assert_eq!(reply_ttl(1000, 1000), 1, "a late reply still gets a second");
        assert_eq!(reply_ttl(900, 1000), 1);
        assert_eq!(reply_ttl(9000, 1000), DEFAULT_TTL);
    }

    #[test]
    fn relay_hosts_are_the_url_authority() {
        assert_eq!(relay_host("ws://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(relay_host("wss://relay.grid.tf/").unwrap(), "relay.grid.tf");
        assert_eq!(
            relay_host("wss://u@relay.grid.tf:443/x?y").unwrap(),
            "relay.grid.tf:443"
        );
        assert_eq!(relay_host("http://relay"), None);
        assert_eq!(relay_host("ws://"), None);
    }
}
