//! The running gateway: Redis loops around an SDK [`Client`].
//!
//! - [`recover`](crate::recover) first puts back what a previous run was working on;
//! - [`local`](crate::local) workers move requests from `msgbus.system.local` to a
//!   processing list, accept them (backlog written, entry removed, in one script) and
//!   send one envelope per destination;
//! - [`replies`](crate::replies) workers move services' replies from
//!   `msgbus.system.reply` to a processing list and remove each once it is sent;
//! - [`events`](crate::events) takes what the SDK verified (requests for services,
//!   replies for apps, relay errors) and queues the pushes for the writer;
//! - the [`writer`](crate::writer) pushes in batches, each push a script that is
//!   applied once however often it is retried.
//!
//! While Redis is down everything waits (in memory, within [`Limits`]) and the relay
//! connections stay up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use rmb_metrics::{Counter, Registry};
use rmb_registrar_client::RegistrarClient;
use rmb_sdk::{Client, Outgoing, Resend, SendError, Sent};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Limits, PeerConfig};
use crate::memory::{Budget, RedisMemory};
use crate::metrics::PeerMetrics;
use crate::redis_conn::{redact_url, retry, Backoff, Redis, Stop};
use crate::translate::{RequestInfo, Tracked};
use crate::ttl_map::TtlMap;
use crate::writer::Queued;

/// Writes queued for Redis (each also holds its bytes of [`Limits::pending_bytes`]).
const WRITE_QUEUE: usize = 10_000;
/// Replies sent in the background at once.
pub(crate) const BACKGROUND_SENDS: usize = 256;
/// Envelopes waiting for a relay's confirmation at once.
const CONFIRMING: usize = 16_384;

/// Counters, for `/metrics`, logs and tests: each is `rmb_peer_<field>_total` on the
/// peer's [`Registry`] (see [`crate::metrics`]).
pub struct Stats {
    /// Requests taken off `msgbus.system.local`.
    pub requests_popped: Counter,
    /// Request envelopes handed to the relays.
    pub envelopes_sent: Counter,
    /// Local requests dropped because they had expired.
    pub expired_dropped: Counter,
    /// Malformed messages found on the system lists.
    pub malformed: Counter,
    /// Verified requests from remote twins.
    pub incoming_requests: Counter,
    /// Requests from remote twins refused (reserved command, service list full, ...).
    pub refused: Counter,
    /// Verified replies (and relay errors) for our requests.
    pub incoming_replies: Counter,
    /// Replies popped from `msgbus.system.reply` and sent.
    pub replies_sent: Counter,
    /// Messages written to Redis lists.
    pub pushed: Counter,
    /// Messages not pushed because they were already (copies, retries).
    pub duplicates: Counter,
    /// Entries put back from the processing lists, and requests found in flight, at
    /// start.
    pub recovered: Counter,
    /// Failed Redis operations.
    pub redis_errors: Counter,
}

impl Stats {
    /// The counters, registered in `registry`.
    pub fn new(registry: &Registry) -> Stats {
        let c = |name, help| registry.counter(name, help);
        Stats {
            requests_popped: c(
                "rmb_peer_requests_popped_total",
                "Requests of local apps taken off msgbus.system.local.",
            ),
            envelopes_sent: c(
                "rmb_peer_envelopes_sent_total",
                "Request envelopes handed to the relays (one per destination).",
            ),
            expired_dropped: c(
                "rmb_peer_expired_dropped_total",
                "Local requests dropped because they had expired.",
            ),
            malformed: c(
                "rmb_peer_malformed_total",
                "Malformed messages found on the system lists.",
            ),
            incoming_requests: c(
                "rmb_peer_incoming_requests_total",
                "Verified requests from remote twins.",
            ),
            refused: c(
                "rmb_peer_refused_total",
                "Requests from remote twins refused (reserved command, service list full, busy).",
            ),
            incoming_replies: c(
                "rmb_peer_incoming_replies_total",
                "Verified replies and relay errors for our requests.",
            ),
            replies_sent: c(
                "rmb_peer_replies_sent_total",
                "Replies of local services popped from msgbus.system.reply and sent.",
            ),
            pushed: c("rmb_peer_pushed_total", "Messages written to Redis lists."),
            duplicates: c(
                "rmb_peer_duplicates_total",
                "Messages not pushed because they already were (copies, retries).",
            ),
            recovered: c(
                "rmb_peer_recovered_total",
                "Entries put back from the processing lists, and requests found in flight, at start.",
            ),
            redis_errors: c("rmb_peer_redis_errors_total", "Failed Redis operations."),
        }
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    pub(crate) fn inc(counter: &Counter) {
        counter.inc();
    }
}

impl Default for Stats {
    /// Counters on a registry of their own.
    fn default() -> Self {
        Stats::new(&Registry::new())
    }
}

/// A running rmb-peer.
pub struct Peer {
    client: Client,
    stats: Arc<Stats>,
    metrics: Arc<PeerMetrics>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    recovered: watch::Receiver<bool>,
}

/// What the loops share.
pub(crate) struct Shared {
    pub client: Client,
    pub stats: Arc<Stats>,
    /// Local requests in flight, by uid (Redis holds them too; this is the fast path,
    /// and what still routes replies if Redis lost its data).
    pub backlogs: TtlMap<Tracked>,
    /// Schema and deadline of each remote request handed to a service, by
    /// `"<src>|<uid>"`, for its reply.
    pub requests: TtlMap<RequestInfo>,
    pub writer: mpsc::Sender<Queued>,
    /// Bytes of [`Limits::pending_bytes`] not yet taken by queued writes.
    pub pending: Arc<Semaphore>,
    /// Slots for [`Shared::send_in_background`].
    pub background: Arc<Semaphore>,
    /// Slots for envelopes waiting for a relay's confirmation.
    pub confirming: Arc<Semaphore>,
    /// The SDK's receiver memory, in Redis.
    pub memory: Arc<RedisMemory>,
    pub redis_url: String,
    pub backoff: Backoff,
    pub limits: Limits,
    pub resend: Resend,
    pub cancel: CancellationToken,
}

impl Shared {
    /// A new connection to the peer's Redis (the URL was checked at start).
    pub(crate) fn redis(&self) -> Redis {
        Redis::new(&self.redis_url, self.backoff).expect("the redis URL was checked at start")
    }

    /// [`retry`] until `op` succeeds, stopping at shutdown, counting every failure.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        redis: &mut Redis,
        what: &str,
        blocking: Duration,
        op: F,
    ) -> Result<T, Stop>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let errors = &self.stats.redis_errors;
        retry(
            redis,
            &self.cancel,
            what,
            blocking,
            || Stats::inc(errors),
            op,
        )
        .await
    }

    /// Keeps `tracked` in memory until a while after it expires.
    pub(crate) fn remember(&self, tracked: &Tracked, now: u64) {
        self.backlogs.insert(
            tracked.uid.clone(),
            tracked.clone(),
            tracked.deadline + crate::store::BACKLOG_GRACE,
            tracked.size(),
            now,
        );
    }

    /// Sends an envelope. Returns once the SDK has it queued for the relays, with the
    /// handle that tells when a relay confirmed it.
    pub(crate) async fn send(&self, out: Outgoing) -> Result<Sent, SendError> {
        self.client.send(out).await
    }

    /// Runs `work` (waiting for a relay's confirmation) in a task of its own, within
    /// [`CONFIRMING`] at once: waits for a slot; false if the peer shut down first.
    pub(crate) async fn aside(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let slot = tokio::select! {
            slot = self.confirming.clone().acquire_owned() => slot,
            _ = self.cancel.cancelled() => return false,
        };
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
        true
    }

    /// Sends an envelope nobody waits for (an error reply, a version answer) in a task
    /// of its own, within [`BACKGROUND_SENDS`]; beyond that it is dropped, so a flood of
    /// refused requests costs bounded memory.
    pub(crate) fn send_in_background(&self, out: Outgoing) {
        let Ok(slot) = self.background.clone().try_acquire_owned() else {
            tracing::debug!(uid = out.uid, "too many replies in flight: one dropped");
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.send(out).await {
                tracing::debug!("could not send a reply: {e}");
            }
            drop(slot);
        });
    }
}

impl Peer {
    /// Waits for Redis (the receiver memory's key is kept there), registers (unless
    /// `no_update`), connects to the relays and starts the Redis loops.
    pub async fn start(config: PeerConfig) -> anyhow::Result<Peer> {
        Self::start_with_registrar(config, None).await
    }

    /// As [`Peer::start`], with a ready registrar client (tests use short caches).
    pub async fn start_with_registrar(
        config: PeerConfig,
        registrar: Option<RegistrarClient>,
    ) -> anyhow::Result<Peer> {
        redis::Client::open(config.redis_url.as_str()).map_err(|e| {
            anyhow::anyhow!("invalid redis URL {}: {e}", redact_url(&config.redis_url))
        })?;
        let cancel = CancellationToken::new();
        // The receiver memory's hash key lives in Redis: without it, copies arriving
        // after a restart would not be recognised, so the peer waits for Redis here.
        let memory = match RedisMemory::open(
            &config.redis_url,
            config.redis_backoff,
            Budget::of(&config.limits),
            &cancel,
        )
        .await
        .map_err(|e| anyhow::anyhow!("redis at {}: {e}", redact_url(&config.redis_url)))?
        {
            Some(memory) => Arc::new(memory),
            None => anyhow::bail!("stopped while waiting for Redis"),
        };
        let (events_tx, events) = mpsc::channel(1024);
        let registrar = match registrar {
            Some(r) => r,
            None => RegistrarClient::new(&config.registrar_url)?,
        };
        let client = Client::builder(config.secret.clone(), config.key_type)
            .registrar_client(registrar)
            .relays(config.relays.clone())
            .no_update(config.no_update)
            .e2e(config.e2e)
            .pool_config(config.pool.clone())
            .resend(config.resend)
            .resend_interval(config.resend_interval)
            .unhandled(events_tx)
            .memory(memory.clone())
            .build()
            .await?;
        let registry = Registry::new();
        let stats = Arc::new(Stats::new(&registry));
        let (writer, writes) = mpsc::channel(WRITE_QUEUE);
        let limits = config.limits.clone();
        let shared = Arc::new(Shared {
            client: client.clone(),
            stats: stats.clone(),
            backlogs: TtlMap::new(limits.memory_entries, limits.memory_bytes),
            requests: TtlMap::new(limits.memory_entries, limits.memory_bytes),
            writer,
            pending: Arc::new(Semaphore::new(limits.pending_bytes)),
            background: Arc::new(Semaphore::new(BACKGROUND_SENDS)),
            confirming: Arc::new(Semaphore::new(CONFIRMING)),
            memory: memory.clone(),
            redis_url: config.redis_url.clone(),
            backoff: config.redis_backoff,
            limits,
            resend: config.resend,
            cancel: cancel.clone(),
        });
        let metrics = Arc::new(PeerMetrics::new(registry, &shared));
        let (recovered_tx, recovered) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::events::run(shared.clone(), events));
        tasks.spawn(crate::writer::run(shared.clone(), writes));
        let workers = config.workers.max(1);
        let work = shared.clone();
        tasks.spawn(async move {
            // Workers start once what a previous run held is back on the source lists,
            // so nothing is taken twice.
            if !crate::recover::run(&work).await {
                return;
            }
            let _ = recovered_tx.send(true);
            let mut workers_set = JoinSet::new();
            for _ in 0..workers {
                workers_set.spawn(crate::local::run(work.clone()));
                workers_set.spawn(crate::replies::run(work.clone()));
            }
            workers_set.spawn(crate::recover::sweep(work.clone()));
            while workers_set.join_next().await.is_some() {}
        });
        tracing::info!(twin = client.twin_id(), "rmb-peer running");
        Ok(Peer {
            client,
            stats,
            metrics,
            cancel,
            tasks,
            recovered,
        })
    }

    pub fn twin_id(&self) -> u32 {
        self.client.twin_id()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What `GET /metrics` shows ([`crate::metrics::serve`]).
    pub fn metrics(&self) -> Arc<PeerMetrics> {
        self.metrics.clone()
    }

    /// Resolves once what a previous run left in Redis is recovered and the workers
    /// run, or when the peer stops before that.
    pub async fn recovered(&self) {
        let mut recovered = self.recovered.clone();
        let _ = recovered.wait_for(|done| *done).await;
    }

    /// Stops the loops and closes the relay connections.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.client.shutdown();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Runs until one of the tasks ends (they only end on shutdown).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}
