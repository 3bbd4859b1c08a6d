//! The running gateway: Redis loops around an SDK [`Client`].
//!
//! - `local` workers pop `msgbus.system.local`, store the backlog (retrying until Redis
//!   takes it: a popped request is never dropped for a Redis failure), then send one
//!   envelope per destination;
//! - `reply` workers pop `msgbus.system.reply` and send the response envelopes;
//! - the event loop takes what the SDK verified (requests for services, replies for
//!   apps, relay errors) and hands it to the writer;
//! - the writer pushes to Redis in order, in batches, retrying a batch until it is
//!   written: while Redis is down everything waits in memory, relay connections stay up.
//!
//! Backlogs are also kept in memory (bounded), so replies still reach `ret` when Redis
//! restarted without its data in the meantime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::AsyncCommands;
use rmb_core::peer_api::{
    backlog_key, ErrorCode, JsonError, COMMAND_LIST_CAP, SYSTEM_LOCAL, SYSTEM_REPLY,
    VERSION_COMMAND,
};
use rmb_core::prost::Message as _;
use rmb_core::proto::Backlog;
use rmb_core::time::now;
use rmb_core::{Address, KeyType};
use rmb_registrar_client::RegistrarClient;
use rmb_sdk::{Client, Event, Incoming, Outgoing, PoolConfig};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::redis_conn::{retry, Backoff, Redis};
use crate::translate::{self, LocalRequest, RequestInfo};

/// Entries kept in each in-memory map (backlogs, request schemas).
const MEMORY_CAP: usize = 100_000;
/// How often those maps drop their expired entries.
const SWEEP_EVERY_SECS: u64 = 5;
/// Seconds a blocking pop waits before looping (to notice shutdown).
const POP_TIMEOUT: f64 = 1.0;
/// Most messages written to Redis in one round trip.
const WRITE_BATCH: usize = 256;

/// What the gateway needs to run.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Mnemonic or `0x` seed.
    pub secret: String,
    pub key_type: KeyType,
    /// `ws://` / `wss://` relay URLs.
    pub relays: Vec<String>,
    pub redis_url: String,
    pub registrar_url: String,
    /// Leave the registrar record as it is.
    pub no_update: bool,
    /// Register and use an e2e key (on in production).
    pub e2e: bool,
    pub pool: PoolConfig,
    pub redis_backoff: Backoff,
    /// Concurrent poppers of each of the two system lists.
    pub workers: usize,
    /// Send a request again when its reply has not come after this long (doubling
    /// each time), to receivers known to drop copies; `None` never re-sends. See
    /// [`rmb_sdk::ClientBuilder::resend`].
    pub resend_after: Option<Duration>,
}

impl PeerConfig {
    pub fn new(
        secret: impl Into<String>,
        key_type: KeyType,
        relays: Vec<String>,
        redis_url: impl Into<String>,
        registrar_url: impl Into<String>,
    ) -> Self {
        PeerConfig {
            secret: secret.into(),
            key_type,
            relays,
            redis_url: redis_url.into(),
            registrar_url: registrar_url.into(),
            no_update: false,
            e2e: true,
            pool: PoolConfig::default(),
            redis_backoff: Backoff::default(),
            workers: 2,
            resend_after: Some(rmb_sdk::DEFAULT_RESEND_AFTER),
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests taken off `msgbus.system.local`.
    pub requests_popped: AtomicU64,
    /// Request envelopes handed to the relays.
    pub envelopes_sent: AtomicU64,
    /// Local requests dropped because they had expired.
    pub expired_dropped: AtomicU64,
    /// Malformed messages found on the system lists.
    pub malformed: AtomicU64,
    /// Verified requests from remote twins.
    pub incoming_requests: AtomicU64,
    /// Verified replies (and relay errors) for our requests.
    pub incoming_replies: AtomicU64,
    /// Replies popped from `msgbus.system.reply` and sent.
    pub replies_sent: AtomicU64,
    /// Messages written to Redis lists.
    pub pushed: AtomicU64,
    /// Failed Redis operations (each retried).
    pub redis_errors: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running rmb-peer.
pub struct Peer {
    client: Client,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// Something to write to Redis.
enum Write {
    /// LPUSH (and LTRIM to the cap for command lists).
    Push {
        list: String,
        json: String,
        trim: bool,
    },
    /// A reply for the app of request `uid`: its backlog says where.
    Reply { uid: String, reply: Reply },
}

enum Reply {
    Remote(Incoming),
    Relay(String),
}

/// A bounded map whose entries expire (unix seconds).
struct TtlMap<V> {
    map: DashMap<String, (V, u64)>,
    /// Unix second of the last sweep of expired entries.
    swept: AtomicU64,
}

impl<V: Clone> TtlMap<V> {
    fn new() -> Self {
        TtlMap {
            map: DashMap::new(),
            swept: AtomicU64::new(now()),
        }
    }

    fn insert(&self, key: String, value: V, deadline: u64) {
        let now = now();
        // Expired entries go every few seconds, so the map holds about (rate × life)
        // entries rather than growing to the cap before anything is freed.
        let swept = self.swept.load(Ordering::Relaxed);
        if self.map.len() >= MEMORY_CAP
            || (now >= swept + SWEEP_EVERY_SECS
                && self
                    .swept
                    .compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
        {
            self.map.retain(|_, (_, d)| *d > now);
            if self.map.len() >= MEMORY_CAP {
                return;
            }
        }
        self.map.insert(key, (value, deadline));
    }

    fn get(&self, key: &str) -> Option<V> {
        let entry = self.map.get(key)?;
        (entry.1 > now()).then(|| entry.0.clone())
    }
}

struct Shared {
    client: Client,
    stats: Arc<Stats>,
    backlogs: TtlMap<Backlog>,
    /// Schema and deadline of each incoming request, by `"<src>|<uid>"`, for its reply.
    requests: TtlMap<RequestInfo>,
    writer: mpsc::Sender<Write>,
    redis_url: String,
    backoff: Backoff,
    cancel: CancellationToken,
}

impl Peer {
    /// Registers (unless `no_update`), connects to the relays and starts the Redis
    /// loops. Redis need not be up yet.
    pub async fn start(config: PeerConfig) -> anyhow::Result<Peer> {
        Self::start_with_registrar(config, None).await
    }

    /// As [`Peer::start`], with a ready registrar client (tests use short caches).
    pub async fn start_with_registrar(
        config: PeerConfig,
        registrar: Option<RegistrarClient>,
    ) -> anyhow::Result<Peer> {
        redis::Client::open(config.redis_url.as_str())
            .map_err(|e| anyhow::anyhow!("invalid redis URL {:?}: {e}", config.redis_url))?;
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
            .resend(match config.resend_after {
                Some(_) => rmb_sdk::Resend::KnownReceivers,
                None => rmb_sdk::Resend::Off,
            })
            .resend_interval(config.resend_after.unwrap_or(rmb_sdk::DEFAULT_RESEND_AFTER))
            .unhandled(events_tx)
            .build()
            .await?;
        client.handle(VERSION_COMMAND, |_| async {
            Ok(serde_json::to_vec(env!("CARGO_PKG_VERSION")).expect("a string"))
        });
        let cancel = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let (writer, writes) = mpsc::channel(10_000);
        let shared = Arc::new(Shared {
            client: client.clone(),
            stats: stats.clone(),
            backlogs: TtlMap::new(),
            requests: TtlMap::new(),
            writer,
            redis_url: config.redis_url.clone(),
            backoff: config.redis_backoff,
            cancel: cancel.clone(),
        });
        let mut tasks = JoinSet::new();
        for _ in 0..config.workers.max(1) {
            tasks.spawn(pop_loop(shared.clone(), SYSTEM_LOCAL));
            tasks.spawn(pop_loop(shared.clone(), SYSTEM_REPLY));
        }
        tasks.spawn(event_loop(shared.clone(), events));
        tasks.spawn(write_loop(shared, writes));
        tracing::info!(twin = client.twin_id(), "rmb-peer running");
        Ok(Peer {
            client,
            stats,
            cancel,
            tasks,
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

/// Pops one of the system lists forever.
async fn pop_loop(shared: Arc<Shared>, list: &'static str) {
    let mut redis = match Redis::new(&shared.redis_url) {
        Ok(r) => r,
        Err(e) => return tracing::error!("redis: {e}"),
    };
    let what = format!("BRPOP {list}");
    loop {
        let popped = retry(
            &mut redis,
            shared.backoff,
            &shared.cancel,
            &what,
            || Stats::inc(&shared.stats.redis_errors),
            |mut c| async move {
                c.brpop::<_, Option<(String, String)>>(list, POP_TIMEOUT)
                    .await
            },
        )
        .await;
        let Some(popped) = popped else { return };
        let Some((_, json)) = popped else { continue };
        if list == SYSTEM_LOCAL {
            local_request(&shared, &mut redis, &json).await;
        } else {
            local_reply(&shared, &json).await;
        }
    }
}

async fn local_request(shared: &Shared, redis: &mut Redis, json: &str) {
    Stats::inc(&shared.stats.requests_popped);
    let uid = uuid::Uuid::new_v4().to_string();
    let me = shared.client.address().clone();
    let prepared = match translate::local_request(json, &uid, &me, now()) {
        Ok(LocalRequest::Send(p)) => p,
        Ok(LocalRequest::Expired { reference, age }) => {
            Stats::inc(&shared.stats.expired_dropped);
            tracing::info!(?reference, age, "dropping an expired request");
            return;
        }
        Err(bad) => {
            Stats::inc(&shared.stats.malformed);
            tracing::warn!(
                reply_to = ?bad.reply_to,
                "malformed message on {SYSTEM_LOCAL}: {}",
                bad.message
            );
            if let Some(list) = bad.reply_to {
                let error = bad.code.with_message(bad.message);
                let json = translate::error_reply(bad.reference, me.to_string(), error, now());
                push(shared, list, json, false).await;
            }
            return;
        }
    };
    let backlog = prepared.backlog;
    let key = backlog_key(&uid);
    let bytes = backlog.encode_to_vec();
    let ttl = backlog.ttl;
    let stored = retry(
        redis,
        shared.backoff,
        &shared.cancel,
        "storing a backlog",
        || Stats::inc(&shared.stats.redis_errors),
        |mut c| {
            let (key, bytes) = (key.clone(), bytes.clone());
            async move { c.set_ex::<_, _, ()>(key, bytes, ttl).await }
        },
    )
    .await;
    if stored.is_none() {
        return;
    }
    shared
        .backlogs
        .insert(uid.clone(), backlog.clone(), now() + ttl);
    for envelope in prepared.envelopes {
        let dst = envelope.destination.twin;
        match shared.client.send(envelope).await {
            Ok(_) => Stats::inc(&shared.stats.envelopes_sent),
            Err(e) => {
                tracing::info!(uid, dst, "cannot send a request: {e}");
                let error = e.code().with_message(e.to_string());
                let json = translate::error_reply(
                    backlog.reference.clone(),
                    dst.to_string(),
                    error,
                    now(),
                );
                push(shared, backlog.reply_to.clone(), json, false).await;
            }
        }
    }
}

async fn local_reply(shared: &Shared, json: &str) {
    let me = shared.client.address().clone();
    let reply = translate::local_reply(json, &me, |dst, uid| {
        shared.requests.get(&format!("{dst}|{uid}"))
    });
    let out = match reply {
        Ok(out) => out,
        Err(bad) => {
            Stats::inc(&shared.stats.malformed);
            tracing::warn!("malformed message on {SYSTEM_REPLY}: {}", bad.message);
            // Tell the requester, when we can tell who and which request.
            let to = bad
                .reply_to
                .as_deref()
                .and_then(|d| d.parse::<Address>().ok());
            if let (Some(to), Some(uid)) = (to, bad.reference) {
                let out = Outgoing::error(
                    uid,
                    me,
                    to,
                    bad.code.code(),
                    bad.message,
                    None,
                    rmb_core::time::DEFAULT_TTL,
                );
                let _ = shared.client.send(out).await;
            }
            return;
        }
    };
    match shared.client.send(out).await {
        Ok(_) => Stats::inc(&shared.stats.replies_sent),
        Err(e) => tracing::warn!("cannot send a reply: {e}"),
    }
}

async fn push(shared: &Shared, list: String, json: String, trim: bool) {
    let _ = shared.writer.send(Write::Push { list, json, trim }).await;
}

/// Takes what the SDK verified and queues it for Redis.
async fn event_loop(shared: Arc<Shared>, mut events: mpsc::Receiver<Event>) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shared.cancel.cancelled() => None,
        };
        let Some(event) = event else { return };
        let write = match event {
            Event::Request(msg) => {
                Stats::inc(&shared.stats.incoming_requests);
                let deadline = msg.timestamp.saturating_add(msg.expiration);
                let info = RequestInfo {
                    schema: msg.schema.clone(),
                    deadline,
                };
                shared
                    .requests
                    .insert(format!("{}|{}", msg.source, msg.uid), info, deadline);
                let Some((list, json)) = translate::incoming_request(&msg) else {
                    continue;
                };
                Write::Push {
                    list,
                    json,
                    trim: true,
                }
            }
            Event::Reply(msg) => {
                Stats::inc(&shared.stats.incoming_replies);
                Write::Reply {
                    uid: msg.uid.clone(),
                    reply: Reply::Remote(msg),
                }
            }
            Event::RelayError { uid, message } => {
                Stats::inc(&shared.stats.incoming_replies);
                Write::Reply {
                    uid,
                    reply: Reply::Relay(message),
                }
            }
        };
        if shared.writer.send(write).await.is_err() {
            return;
        }
    }
}

/// Writes to Redis in order, a batch per round trip, retrying until written.
async fn write_loop(shared: Arc<Shared>, mut writes: mpsc::Receiver<Write>) {
    let mut redis = match Redis::new(&shared.redis_url) {
        Ok(r) => r,
        Err(e) => return tracing::error!("redis: {e}"),
    };
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            w = writes.recv() => w,
            _ = shared.cancel.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut count = 0u64;
        for write in batch.drain(..) {
            let (list, json, trim) = match write {
                Write::Push { list, json, trim } => (list, json, trim),
                Write::Reply { uid, reply } => {
                    let Some(backlog) = find_backlog(&shared, &mut redis, &uid).await else {
                        if shared.cancel.is_cancelled() {
                            return;
                        }
                        tracing::info!(uid, "reply to an unknown or expired request dropped");
                        continue;
                    };
                    let json = match reply {
                        Reply::Remote(msg) => translate::incoming_reply(&msg, &backlog),
                        Reply::Relay(message) => translate::error_reply(
                            backlog.reference.clone(),
                            "0".into(),
                            JsonError {
                                code: ErrorCode::Relay.code(),
                                message,
                            },
                            now(),
                        ),
                    };
                    (backlog.reply_to, json, false)
                }
            };
            pipe.lpush(&list, json).ignore();
            if trim {
                pipe.ltrim(&list, 0, COMMAND_LIST_CAP as isize - 1).ignore();
            }
            count += 1;
        }
        if count == 0 {
            continue;
        }
        let written = retry(
            &mut redis,
            shared.backoff,
            &shared.cancel,
            "pushing messages",
            || Stats::inc(&shared.stats.redis_errors),
            |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<()>(&mut c).await }
            },
        )
        .await;
        if written.is_none() {
            return;
        }
        shared.stats.pushed.fetch_add(count, Ordering::Relaxed);
    }
}

/// The backlog of request `uid`: from memory, else from Redis. `None` if unknown.
async fn find_backlog(shared: &Shared, redis: &mut Redis, uid: &str) -> Option<Backlog> {
    if let Some(backlog) = shared.backlogs.get(uid) {
        return Some(backlog);
    }
    let key = backlog_key(uid);
    let bytes = retry(
        redis,
        shared.backoff,
        &shared.cancel,
        "reading a backlog",
        || Stats::inc(&shared.stats.redis_errors),
        |mut c| {
            let key = key.clone();
            async move { c.get::<_, Option<Vec<u8>>>(key).await }
        },
    )
    .await??;
    match Backlog::decode(&bytes[..]) {
        Ok(backlog) => Some(backlog),
        Err(e) => {
            tracing::warn!(uid, "undecodable backlog: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_maps_drop_expired_entries_without_waiting_to_be_full() {
        let map = TtlMap::new();
        let t = now();
        for i in 0..10 {
            map.insert(format!("old-{i}"), i, t - 1);
        }
        map.insert("live".into(), 99, t + 60);
        assert_eq!(map.get("old-3"), None, "expired entries are never served");
        assert_eq!(map.map.len(), 11, "no sweep before its time");
        // The next sweep is due: the next insert drops everything expired.
        map.swept.store(t - SWEEP_EVERY_SECS, Ordering::Relaxed);
        map.insert("new".into(), 100, t + 60);
        assert_eq!(map.map.len(), 2);
        assert_eq!(map.get("live"), Some(99));
    }
}
