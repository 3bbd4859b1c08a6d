//! The relay's shared state and the routing step every envelope goes through, whether
//! it came from a local session or from another relay.
//!
//! Every way in ends in one [`Outcome`], and every refusal of an envelope from a session
//! goes through [`RelayState::refuse`], the one place that decides whether the sender
//! hears of it. Nothing here reads the clock: `now` is passed in, so the routing step is
//! unit-tested without sockets (see the tests below).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::rules::HashKey;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, BackendError};
use crate::budget::OverBudget;
use crate::clock::CoarseClock;
use crate::config::Config;
use crate::dedup::{Claim, Remember, SeenKeys};
use crate::directory::{DirectoryError, TwinDirectory, TwinRecord};
use crate::mailbox::QueuedFrame;
use crate::metrics::Metrics;
use crate::ranker::Ranker;
use crate::ratelimit::RateLimiter;
use crate::recheck::Rechecks;
use crate::route::{self, Forward, Inbound, Rejection, ReplyTo};
use crate::session_key::SessionKey;
use crate::verifier::Verifier;
use crate::{federation, outbound};

pub struct RelayState {
    pub config: Config,
    pub directory: Arc<dyn TwinDirectory>,
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
    pub limiter: RateLimiter,
    pub ranker: Ranker,
    /// Bounds the fresh registrar lookups federation posts can cause.
    pub rechecks: Rechecks,
    pub http: reqwest::Client,
    /// Federation attempts in flight at once; more wait for a permit.
    pub federation_slots: Arc<Semaphore>,
    /// Federation deliveries waiting or in flight: each holds an owned permit for its
    /// whole life, so however it ends (even by a panic) the slot comes back.
    pub federation_backlog: Arc<Semaphore>,
    /// Bytes of the envelopes those deliveries hold (memory backend; the Redis outbox
    /// counts its own): with 64 MiB envelopes a count alone bounds nothing.
    pub federation_bytes: Arc<Semaphore>,
    /// WebSocket sessions: one owned permit per session, from the upgrade to its end.
    pub connections: Arc<Semaphore>,
    pub next_connection: AtomicU64,
    pub clock: CoarseClock,
    /// The secret of the keys of the memory of accepted envelopes (D1a).
    pub hash_key: HashKey,
    /// Cancelled when the relay shuts down: every connection closes.
    pub shutdown: CancellationToken,
    /// Connection, federation and background tasks, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Signatures of federated envelopes, verified in batches on every core.
    pub verifier: Verifier,
}

/// What became of one envelope.
#[derive(Debug)]
pub enum Outcome {
    /// An envelope ping from a session: answer it with a pong.
    Pong,
    /// A copy of an envelope already accepted: dropped, uncharged (D1a).
    Duplicate,
    /// Handed to the connected destination session.
    Delivered,
    /// Queued until the destination connects.
    Queued,
    /// Handed to federation: the destination lives on other relays.
    Federated,
    /// Not routed, for this reason.
    Refused(Refusal),
    /// Nothing was done: the destination's record is not cached and the caller asked
    /// not to wait for a lookup ([`RelayState::from_session_with`]).
    NeedsLookup,
}

/// Where an envelope came from, which decides what happens to one whose destination
/// lives elsewhere.
pub enum Via {
    /// A local session: federate it, and tell this sender if that fails.
    Session(ReplyTo),
    /// Another relay: never federated again (relays that disagree about a twin would
    /// bounce it between them).
    Federation,
}

/// Where [`RelayState::dispatch`] put an envelope.
#[derive(Debug)]
pub enum Routed {
    Delivered,
    Queued,
    /// The destination twin lives on other relays.
    Elsewhere {
        fwd: Forward,
        twin: Arc<TwinRecord>,
    },
}

/// Why an envelope was not routed; the text is what its sender reads (a relay error
/// over WebSocket, the body of the answer to a federation post).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("rate limit exceeded for twin {twin}: at most {limit}")]
    RateLimited { twin: u32, limit: String },
    #[error("twin {0} is not registered")]
    UnknownTwin(u32),
    #[error("destination {0} is offline (fail-fast)")]
    Offline(SessionKey),
    #[error("cannot look up the destination twin: {0}")]
    Directory(#[source] DirectoryError),
    #[error("relay storage error: {0}")]
    Backend(#[source] BackendError),
    #[error("{0}")]
    QueueFull(#[source] OverBudget),
    #[error("relay federation backlog is full, retry later")]
    FederationBacklogFull,
    /// Federation gave up: every relay of the destination failed or one refused.
    #[error("{0}")]
    FederationFailed(String),
    /// A federated envelope for a twin that does not live here (forwarding it again
    /// could loop between relays that disagree about the twin).
    #[error("twin {0} does not live on this relay")]
    NotHostedHere(u32),
    /// The rest are federation posts only.
    #[error("body is not a valid protobuf envelope: {0}")]
    Undecodable(#[from] rmb_core::prost::DecodeError),
    #[error("envelope has no source twin (unsigned relay envelopes are not federated)")]
    NoSource,
    #[error("source twin {0} is not registered")]
    UnknownSource(u32),
    #[error("cannot look up the source twin: {0}")]
    SourceLookup(#[source] DirectoryError),
    #[error("signature does not verify against twin {twin}'s key: {source}")]
    BadSignature {
        twin: u32,
        source: rmb_core::SignatureError,
    },
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::QueueFull(over) => Refusal::QueueFull(over),
            other => Refusal::Backend(other),
        }
    }
}

impl Refusal {
    /// The `reason` label of `rmb_relay_rejected_total` for a refusal of an envelope
    /// from a session.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Rejected(r) => r.label(),
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::FederationBacklogFull => "federation_backlog_full",
            Refusal::FederationFailed(_) => "federation_failed",
            Refusal::QueueFull(_) => "queue_full",
            _ => "unroutable",
        }
    }
}

impl RelayState {
    /// The state of a relay with these parts; starts the coarse clock on `tasks`.
    pub fn new(
        config: Config,
        directory: Arc<dyn TwinDirectory>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, reqwest::Error> {
        let http = outbound::client(config.federation_timeout, config.federation_allow_private)?;
        Ok(RelayState {
            limiter: RateLimiter::new(config.rate_limit),
            ranker: Ranker::new(config.ranker_period, config.ranker_relays),
            rechecks: Rechecks::new(crate::recheck::DEFAULT_RECHECKS_PER_SECOND),
            federation_slots: Arc::new(Semaphore::new(config.federation_concurrency)),
            federation_backlog: Arc::new(Semaphore::new(config.federation_backlog)),
            federation_bytes: Arc::new(Semaphore::new(
                config
                    .federation_backlog_bytes
                    .clamp(config.max_envelope_size, Semaphore::MAX_PERMITS),
            )),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            next_connection: AtomicU64::new(1),
            clock: CoarseClock::start(shutdown.clone(), &tasks),
            verifier: Verifier::start(config.verify_threads, shutdown.clone(), &tasks),
            // Instances sharing a de-dup memory (Redis) must hash alike.
            hash_key: backend.hash_key().unwrap_or_else(HashKey::random),
            shutdown,
            tasks,
            http,
            directory,
            backend,
            metrics,
            config,
        })
    }

    /// Sessions holding a connection slot (upgrading or connected).
    pub fn open_connections(&self) -> usize {
        self.config
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }

    /// The routing step for an envelope the authenticated `session` sent (its header
    /// `env`, the bytes `frame`) at `now`: the session's checks, then [`accept`].
    ///
    /// [`accept`]: RelayState::accept
    pub async fn from_session(
        self: &Arc<Self>,
        session: &SessionKey,
        env: &EnvelopeHeader,
        frame: &Bytes,
        now: u64,
    ) -> Outcome {
        self.from_session_with(session, env, frame, now, true).await
    }

    /// [`from_session`](Self::from_session); with `may_wait` false it never waits for a
    /// registrar lookup: [`Outcome::NeedsLookup`] (nothing done) when the destination's
    /// record is not cached. What it waits for otherwise is storage alone, which takes
    /// the envelope in the first poll; the read loop relies on that to keep a session's
    /// envelopes in order while many are routed at once.
    pub async fn from_session_with(
        self: &Arc<Self>,
        session: &SessionKey,
        env: &EnvelopeHeader,
        frame: &Bytes,
        now: u64,
        may_wait: bool,
    ) -> Outcome {
        let fwd = match route::classify(env, session, &self.config.rules, now) {
            Ok(Inbound::Ping) => return Outcome::Pong,
            Ok(Inbound::Forward(fwd)) => fwd,
            Err(rejection) => return Outcome::Refused(rejection.into()),
        };
        // Taken now and used throughout: a cached record can expire between two looks.
        let known = match self.directory.cached(fwd.destination.twin) {
            Some(record) => Some(record),
            None if may_wait => None,
            None => return Outcome::NeedsLookup,
        };
        let via = Via::Session(ReplyTo::of(env, session));
        let keys = SeenKeys::of(&self.hash_key, env);
        self.accept(via, fwd, keys, session.twin, frame, now, known)
            .await
    }

    /// The steps every envelope whose source is established (by its session, or by its
    /// signature) goes through: dropped if it is a copy of one accepted before, charged
    /// to `source`'s rate limit, then dispatched. It is remembered only if accepted: a
    /// refused envelope may be sent again.
    /// `known`: the destination's record (or its absence) if the caller has it.
    #[allow(clippy::too_many_arguments)]
    pub async fn accept(
        self: &Arc<Self>,
        via: Via,
        fwd: Forward,
        keys: SeenKeys,
        source: u32,
        frame: &Bytes,
        now: u64,
        known: Option<Option<Arc<TwinRecord>>>,
    ) -> Outcome {
        // Remembered no longer than the relay would keep the envelope anyway.
        let until = fwd
            .deadline
            .min(now.saturating_add(self.config.rules.max_lifetime));
        match self.backend.claim(&keys, until, now).await {
            Ok(Claim::Copy) => return Outcome::Duplicate,
            Ok(Claim::New { evicted }) => {
                Metrics::add(&self.metrics.dedup_evicted, evicted as u64);
            }
            Err(e) => return Outcome::Refused(e.into()),
        }
        let remember = Remember { keys, until };
        let outcome = match self.charge(source, frame.len(), now) {
            Err(refusal) => Outcome::Refused(refusal),
            Ok(()) => match self
                .dispatch(fwd, frame.clone(), Some(remember), known)
                .await
            {
                Ok(Routed::Delivered) => Outcome::Delivered,
                Ok(Routed::Queued) => Outcome::Queued,
                Ok(Routed::Elsewhere { fwd, twin }) => match via {
                    Via::Session(reply_to) => {
                        let relays = twin.relays.clone();
                        let frame =
                            QueuedFrame::new(frame.clone(), fwd.deadline).remembering(remember);
                        let submitted = federation::submit(self, frame, fwd, reply_to, relays);
                        match submitted.await {
                            Ok(()) => Outcome::Federated,
                            Err(refusal) => Outcome::Refused(refusal),
                        }
                    }
                    Via::Federation => {
                        self.recheck_then_queue(fwd, frame.clone(), remember, now)
                            .await
                    }
                },
                Err(refusal) => Outcome::Refused(refusal),
            },
        };
        match outcome {
            // A durable backend found, as it stored the envelope, that another instance
            // had just accepted a copy: nothing was stored.
            // Copies are never charged.
            Outcome::Refused(Refusal::Backend(BackendError::Copy)) => {
                self.limiter.refund(source, frame.len(), now);
                Outcome::Duplicate
            }
            Outcome::Refused(_) => {
                self.backend.release(&keys).await;
                outcome
            }
            _ => outcome,
        }
    }

    /// Counts an envelope of `size` bytes against `twin`'s rate limit.
    pub fn charge(&self, twin: u32, size: usize, now: u64) -> Result<(), Refusal> {
        if self.limiter.allow(twin, size, now) {
            Ok(())
        } else {
            Err(Refusal::RateLimited {
                twin,
                limit: self.limiter.describe(),
            })
        }
    }

    /// Routes one envelope (§3.2): to the connected session, else by the destination
    /// twin's registered relays to a queue here or elsewhere.
    /// `remember`: the keys of the envelope being accepted, for a backend that remembers
    /// them as it stores the frame.
    pub async fn dispatch(
        &self,
        fwd: Forward,
        frame: Bytes,
        remember: Option<Remember>,
        known: Option<Option<Arc<TwinRecord>>>,
    ) -> Result<Routed, Refusal> {
        let mut frame = QueuedFrame::new(frame, fwd.deadline);
        frame.remember = remember;
        if self
            .backend
            .deliver_connected(&fwd.destination, &frame)
            .await?
        {
            return Ok(Routed::Delivered);
        }
        let twin_id = fwd.destination.twin;
        let twin = match known {
            Some(known) => known,
            None => self
                .directory
                .twin(twin_id)
                .await
                .map_err(Refusal::Directory)?,
        }
        .ok_or(Refusal::UnknownTwin(twin_id))?;
        if !route::lives_here(&twin.relays, &self.config.domains) {
            return Ok(Routed::Elsewhere { fwd, twin });
        }
        self.queue_here(&fwd, frame).await
    }

    /// Queues an envelope for an offline twin that lives here (unless `fail-fast`).
    async fn queue_here(&self, fwd: &Forward, frame: QueuedFrame) -> Result<Routed, Refusal> {
        if fwd.fail_fast {
            return Err(Refusal::Offline(fwd.destination.clone()));
        }
        self.backend.enqueue(&fwd.destination, frame).await?;
        Ok(Routed::Queued)
    }

    /// A federation post for a twin our cached record puts elsewhere. The posting relay
    /// thinks it lives here, and the twin may have just moved (the original relay
    /// queues every post and reads our 4xx as final): ask the registrar afresh (bounded
    /// by [`Rechecks`]) before refusing, and queue it if the twin lives here now. An
    /// envelope for a twin that lives elsewhere is never federated again: relays that
    /// disagree about a twin would bounce it between them.
    async fn recheck_then_queue(
        &self,
        fwd: Forward,
        frame: Bytes,
        remember: Remember,
        now: u64,
    ) -> Outcome {
        let twin_id = fwd.destination.twin;
        if !self.rechecks.allow(now) {
            return Outcome::Refused(Refusal::NotHostedHere(twin_id));
        }
        let lives_here = match self.directory.fresh_twin(twin_id).await {
            Ok(Some(twin)) => route::lives_here(&twin.relays, &self.config.domains),
            Ok(None) => return Outcome::Refused(Refusal::UnknownTwin(twin_id)),
            Err(e) => return Outcome::Refused(Refusal::Directory(e)),
        };
        if !lives_here {
            return Outcome::Refused(Refusal::NotHostedHere(twin_id));
        }
        let frame = QueuedFrame::new(frame, fwd.deadline).remembering(remember);
        match self.queue_here(&fwd, frame).await {
            Ok(_) => Outcome::Queued,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    /// The error policy for an envelope from a session that was not routed: counted,
    /// logged, and a relay error back to the sender if it was a request.
    pub async fn refuse(&self, to: &ReplyTo, refusal: &Refusal, now: u64) {
        match refusal {
            Refusal::RateLimited { .. } => Metrics::inc(&self.metrics.rate_limited),
            other => self.metrics.rejected(other.label()),
        }
        tracing::debug!(session = %to.session, uid = %to.uid, %refusal, "envelope not routed");
        if to.is_request {
            self.send_relay_error(&to.session, &to.uid, refusal.to_string(), now)
                .await;
        }
    }

    /// Sends a relay error envelope for `uid` to a session of this relay.
    async fn send_relay_error(&self, to: &SessionKey, uid: &str, message: String, now: u64) {
        let env = route::error_envelope(uid, to, message, now);
        let frame = QueuedFrame::new(
            Bytes::from(env.encode_to_vec()),
            now + route::ERROR_EXPIRATION,
        );
        // The sender is usually connected here: straight to its mailbox, so it hears
        // of the refusal even when storage is what failed.
        if self.backend.deliver_here(to, &frame) {
            return;
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::directory::StaticDirectory;
    use crate::mailbox::Mailbox;
    use rmb_core::proto::{MessageKind, RequestHeader, Skipped};
    use rmb_core::Address;

    pub(crate) const NOW: u64 = 1_700_000_000;
    pub(crate) const HERE: &str = "relay.here";

    /// A relay serving [`HERE`] with the memory backend and twins 1 and 2 living here,
    /// 3 elsewhere; no socket anywhere.
    pub(crate) fn relay(
        tweak: impl FnOnce(&mut Config),
    ) -> (Arc<RelayState>, Arc<StaticDirectory>) {
        let mut config = Config::new(vec![HERE.into()]);
        tweak(&mut config);
        let directory = Arc::new(StaticDirectory::default());
        for (twin, relay) in [(1, HERE), (2, HERE), (3, "relay.there")] {
            let record = TwinRecord {
                public_key: [twin as u8; 32],
                relays: vec![relay.into()],
            };
            directory.insert(twin, record);
        }
        let metrics = Arc::new(Metrics::new(config.metric_relay_labels));
        let backend = Arc::new(MemoryBackend::new(&config, metrics.clone()));
        let state = RelayState::new(
            config,
            directory.clone(),
            backend,
            metrics,
            CancellationToken::new(),
            TaskTracker::new(),
        )
        .unwrap();
        (Arc::new(state), directory)
    }

    pub(crate) async fn attach(state: &RelayState, key: &SessionKey) -> Arc<Mailbox> {
        state
            .backend
            .attach(key, 1, CancellationToken::new())
            .await
            .unwrap()
    }

    fn header(from: u32, to: Address, kind: MessageKind) -> EnvelopeHeader {
        EnvelopeHeader {
            uid: Bytes::from_static(b"uid-1"),
            timestamp: NOW,
            expiration: 60,
            source: Some(Address::twin(from)),
            destination: Some(to),
            kind: Some(kind),
            ..Default::default()
        }
        .signed()
    }

    trait Signed {
        fn signed(self) -> Self;
    }

    impl Signed for EnvelopeHeader {
        /// A signature of the right shape, different for every uid, destination and tags
        /// (the relay never verifies a session's signatures, it only keys copies on them).
        fn signed(mut self) -> Self {
            let mut text = self.uid.to_vec();
            text.extend(format!("{:?}{:?}", self.destination, self.tags).bytes());
            let mut signature = vec![b'e'];
            signature.extend(text.iter().cycle().take(64));
            self.signature = Some(Bytes::from(signature));
            self
        }
    }

    fn request(from: u32, to: Address) -> EnvelopeHeader {
        let command = RequestHeader {
            command: Bytes::from_static(b"calc.add"),
        };
        header(from, to, MessageKind::Request(command))
    }

    fn frame(env: &EnvelopeHeader) -> Bytes {
        Bytes::from(env.encode_to_vec())
    }

    fn drain(mailbox: &Mailbox) -> Vec<rmb_core::Envelope> {
        let mut out = Vec::new();
        mailbox.pop_batch(NOW, 100, &mut out);
        out.iter()
            .map(|f| rmb_core::Envelope::decode(&f.data[..]).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_connected_destination_gets_the_frame() {
        let (state, _) = relay(|_| {});
        let b = attach(&state, &SessionKey::new(2, None)).await;
        let env = request(1, Address::twin(2));
        let outcome = state
            .from_session(&SessionKey::new(1, None), &env, &frame(&env), NOW)
            .await;
        assert!(matches!(outcome, Outcome::Delivered), "{outcome:?}");
        assert_eq!(drain(&b).len(), 1);
    }

    #[tokio::test]
    async fn an_offline_destination_living_here_is_queued_unless_fail_fast() {
        let (state, _) = relay(|_| {});
        let a = SessionKey::new(1, None);
        let env = request(1, Address::session(2, "s"));
        let outcome = state.from_session(&a, &env, &frame(&env), NOW).await;
        assert!(matches!(outcome, Outcome::Queued), "{outcome:?}");
        let mut ff = request(1, Address::twin(2));
        ff.tags = Some(Bytes::from_static(b"fail-fast"));
        let ff = ff.signed();
        let outcome = state.from_session(&a, &ff, &frame(&ff), NOW).await;
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::Offline(_))),
            "{outcome:?}"
        );
        let queued = attach(&state, &SessionKey::new(2, Some("s".into()))).await;
        assert_eq!(
            drain(&queued).len(),
            1,
            "the queued one, not the fail-fast one"
        );
    }

    #[tokio::test]
    async fn twins_elsewhere_are_federated_and_unknown_twins_refused() {
        let (state, _) = relay(|_| {});
        let a = SessionKey::new(1, None);
        let env = request(1, Address::twin(3));
        let outcome = state.from_session(&a, &env, &frame(&env), NOW).await;
        assert!(matches!(outcome, Outcome::Federated), "{outcome:?}");
        let fwd = route::forward(&env, &rmb_core::rules::Rules::default(), NOW).unwrap();
        let Ok(Routed::Elsewhere { twin, .. }) = state.dispatch(fwd, frame(&env), None, None).await
        else {
            panic!("not elsewhere")
        };
        assert_eq!(twin.relays, ["relay.there"]);
        let env = request(1, Address::twin(99));
        let outcome = state.from_session(&a, &env, &frame(&env), NOW).await;
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::UnknownTwin(99))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn pings_spoofs_and_the_rate_limit() {
        let (state, _) = relay(|c| {
            c.rate_limit.messages = Some(1);
        });
        let a = SessionKey::new(1, None);
        let ping = header(0, Address::twin(0), MessageKind::Ping(Skipped {}));
        let outcome = state.from_session(&a, &ping, &frame(&ping), NOW).await;
        assert!(matches!(outcome, Outcome::Pong), "{outcome:?}");
        let spoof = request(2, Address::twin(1));
        let outcome = state.from_session(&a, &spoof, &frame(&spoof), NOW).await;
        assert!(
            matches!(
                outcome,
                Outcome::Refused(Refusal::Rejected(Rejection::SourceMismatch { .. }))
            ),
            "{outcome:?}"
        );
        let env = request(1, Address::twin(2));
        let first = state.from_session(&a, &env, &frame(&env), NOW).await;
        assert!(matches!(first, Outcome::Queued), "{first:?}");
        let mut other = request(1, Address::twin(2));
        other.uid = Bytes::from_static(b"uid-2");
        let other = other.signed();
        let second = state.from_session(&a, &other, &frame(&other), NOW).await;
        assert!(
            matches!(
                second,
                Outcome::Refused(Refusal::RateLimited { twin: 1, .. })
            ),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn copies_are_dropped_uncharged_and_refused_envelopes_forgotten() {
        let (state, _) = relay(|c| {
            c.rate_limit.messages = Some(2);
        });
        let a = SessionKey::new(1, None);
        let env = request(1, Address::session(2, "x"));
        let first = state.from_session(&a, &env, &frame(&env), NOW).await;
        assert!(matches!(first, Outcome::Queued), "{first:?}");
        for _ in 0..3 {
            let copy = state.from_session(&a, &env, &frame(&env), NOW + 1).await;
            assert!(matches!(copy, Outcome::Duplicate), "{copy:?}");
        }
        let mut empty = env.clone();
        empty.destination = Some(Address::session(2, ""));
        let empty = empty.signed();
        let other = state.from_session(&a, &empty, &frame(&empty), NOW).await;
        assert!(
            matches!(other, Outcome::Queued),
            "session \"\" is not session \"x\"; and the copies were not charged: {other:?}"
        );
        // A refused envelope is not remembered: sent again, it is judged again.
        let (state, directory) = relay(|_| {});
        let to_99 = request(1, Address::twin(99));
        let refused = state.from_session(&a, &to_99, &frame(&to_99), NOW).await;
        assert!(
            matches!(refused, Outcome::Refused(Refusal::UnknownTwin(99))),
            "{refused:?}"
        );
        directory.insert(
            99,
            TwinRecord {
                public_key: [9; 32],
                relays: vec![HERE.into()],
            },
        );
        let again = state.from_session(&a, &to_99, &frame(&to_99), NOW).await;
        assert!(matches!(again, Outcome::Queued), "{again:?}");
    }

    #[tokio::test]
    async fn refusals_reach_the_sender_of_a_request_only() {
        let (state, _) = relay(|_| {});
        let a = SessionKey::new(1, None);
        let mailbox = attach(&state, &a).await;
        let mut to = ReplyTo {
            session: a.clone(),
            uid: "u-1".into(),
            is_request: true,
        };
        state.refuse(&to, &Refusal::UnknownTwin(9), NOW).await;
        to.is_request = false;
        state.refuse(&to, &Refusal::UnknownTwin(9), NOW).await;
        let errors = drain(&mailbox);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].uid, "u-1");
        assert_eq!(
            state
                .metrics
                .labelled("rmb_relay_rejected_total", "reason=\"unroutable\""),
            2
        );
    }
}
