//! Redis backend: several relay processes serving the same domains share sessions and
//! queues, and what the relay accepted survives the crash of any of them.
//!
//! Every envelope for a session of our domains is stored in that session's queue in
//! Redis (a stream) before the relay confirms it to the sender (the pong after it is
//! written only once the store returned); the instance holding the session reads the
//! queue into the session's mailbox a bounded window at a time ([`feeder`]) and removes
//! each frame once the writer has flushed it to the socket. So a queue is never moved
//! whole into memory, and whatever an instance held when it died is still in Redis for
//! the session's next connection. The formats are in [`wire`], the atomic steps in
//! [`scripts`].
//!
//! Storing is batched ([`appender`]): the frames of all connections share one pipeline
//! per round trip. Reading costs one pipeline per window (which also removes what was
//! written). Another instance holding the session is poked through its inbox, by the
//! same script that stores the frame.
//!
//! Bounds: per session queue (frames, bytes; beyond them the oldest are dropped), per
//! destination twin across its session ids and for the whole relay (beyond them new
//! frames are refused), all counted in Redis by the scripts that change the queues.

mod appender;
mod feeder;
mod outbox;
mod scripts;
mod tasks;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::appender::{Appended, Appender, Target};
use self::outbox::RedisOutbox;
use self::scripts::{Lua, Scripts};
use super::memory::note_dropped;
use super::{Backend, BackendError, LocalSessions, Outbox, QueueBounds};
use crate::dedup::{Claim, SeenKeys};
use crate::mailbox::{Done, Mailbox, QueuedFrame, StoredId};
use crate::metrics::Metrics;
use crate::session_key::SessionKey;
use rmb_core::rules::HashKey;

/// Longest wait for Redis to answer a pipeline, or to accept a connection.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Offline queues whose frames all expired, deleted per sweep.
const SWEEP_QUEUES: usize = 100;

pub struct RedisBackend {
    inner: Arc<Inner>,
    appender: Appender,
    outbox: Arc<RedisOutbox>,
    /// The key all instances hash de-dup keys with.
    hash_key: HashKey,
    /// The relay's tracked tasks (feeders are spawned there too).
    tasks: TaskTracker,
}

pub(crate) struct Inner {
    id: String,
    redis: ConnectionManager,
    url: String,
    scripts: Scripts,
    local: LocalSessions,
    limits: QueueBounds,
    metrics: Arc<Metrics>,
    owner_ttl_secs: u64,
    /// Keys the shared memory of accepted envelopes holds at most.
    seen_capacity: usize,
    /// The mailbox and feeder of each connection here, by connection id.
    feeders: DashMap<u64, (Arc<Mailbox>, JoinHandle<Vec<Done>>)>,
}

impl RedisBackend {
    pub async fn connect(
        url: &str,
        limits: QueueBounds,
        seen_capacity: usize,
        metrics: Arc<Metrics>,
        heartbeat: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // While Redis is away, fail fast (each caller gets an error at once and the next
        // one tries to reconnect) instead of holding every session's envelopes through
        // seconds of reconnection back-off.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_factor(50)
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_with_config(client, config).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            id,
            redis,
            url: url.to_string(),
            scripts: Scripts::new(REDIS_TIMEOUT),
            local: LocalSessions::new(limits.session),
            limits,
            metrics,
            // Three missed heartbeats and the mark is gone.
            owner_ttl_secs: (heartbeat.as_secs() * 3).max(3),
            seen_capacity,
            feeders: DashMap::new(),
        });
        // Alive before taking any federation work, or another instance could take it
        // over as a dead one's.
        tasks::announce(&inner).await?;
        let hash_key = shared_hash_key(&inner.redis).await?;
        tracing::info!(instance = %inner.id, "redis backend connected");
        let (appender, appending) = Appender::start(inner.clone(), shutdown.clone());
        tasks.spawn(appending);
        tasks.spawn(tasks::inbox_loop(inner.clone(), shutdown.clone()));
        tasks.spawn(tasks::heartbeat_loop(
            inner.clone(),
            heartbeat,
            shutdown.clone(),
        ));
        let outbox = Arc::new(RedisOutbox::new(inner.clone(), appender.clone(), heartbeat));
        Ok(RedisBackend {
            inner,
            appender,
            outbox,
            hash_key,
            tasks: tasks.clone(),
        })
    }

    async fn store(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
        require_owner: bool,
    ) -> Result<bool, BackendError> {
        let target = Target::Session {
            key: key.clone(),
            require_owner,
        };
        match self.appender.append(target, frame).await? {
            Appended::NotConnected => Ok(false),
            Appended::Stored { owner, dropped } => {
                note_dropped(&self.inner.metrics, key, dropped);
                if owner.as_deref() == Some(self.inner.id.as_str()) {
                    if let Some(mailbox) = self.inner.local.connected_mailbox(key) {
                        mailbox.signal_arrival();
                    }
                }
                Ok(true)
            }
        }
    }
}

impl Inner {
    /// The script call storing `frame` for `key`.
    fn append_cmd(&self, key: &SessionKey, frame: &QueuedFrame, require_owner: bool) -> Cmd {
        let session = key.to_string();
        let mut cmd = self.scripts.call(
            Lua::Append,
            &[
                &wire::queue_key(key),
                &wire::twin_key(key.twin),
                wire::TOTAL_KEY,
                &wire::owner_key(key),
                wire::EXPIRY_KEY,
                wire::SEEN_KEY,
            ],
        );
        let l = &self.limits;
        cmd.arg(wire::encode_stored(frame))
            .arg(frame.deadline)
            .arg(&session)
            .arg(wire::session_bytes_field(key))
            .arg(&self.id)
            .arg(if require_owner { "1" } else { "0" })
            .arg(l.session.max_frames)
            .arg(l.session.max_bytes)
            .arg(l.twin.max_frames)
            .arg(l.twin.max_bytes)
            .arg(l.total.max_frames)
            .arg(l.total.max_bytes)
            .arg(wire::inbox_key(""))
            .arg(wire::wake_key(""))
            .arg(self.owner_ttl_secs);
        self.remember_args(&mut cmd, frame);
        cmd
    }

    /// The arguments of the scripts' `seen_fn`: the keys `frame` is remembered under
    /// (none for a frame the relay made).
    fn remember_args(&self, cmd: &mut Cmd, frame: &QueuedFrame) {
        let mut keys = match (&frame.remember, self.seen_capacity) {
            (_, 0) | (None, _) => Vec::new(),
            (Some(r), _) => r.keys.iter().map(wire::seen_member).collect(),
        };
        keys.resize(2, String::new());
        let until = frame.remember.map_or(0, |r| r.until);
        cmd.arg(self.seen_capacity).arg(until).arg(&keys);
    }

    /// The script call storing `frame` in the federation outbox.
    fn outbox_put_cmd(&self, frame: &QueuedFrame) -> Cmd {
        let mut cmd = self.scripts.call(
            Lua::OutboxPut,
            &[wire::OUTBOX_KEY, wire::OUTBOX_COUNT_KEY, wire::SEEN_KEY],
        );
        cmd.arg(wire::encode_stored(frame))
            .arg(self.limits.outbox.max_frames)
            .arg(self.limits.outbox.max_bytes);
        self.remember_args(&mut cmd, frame);
        cmd
    }

    /// The script call removing `done` frames of `key`'s queue.
    fn ack_cmd(&self, key: &SessionKey, done: &[Done]) -> Cmd {
        let mut cmd = self.scripts.call(
            Lua::Ack,
            &[
                &wire::queue_key(key),
                &wire::twin_key(key.twin),
                wire::TOTAL_KEY,
                wire::EXPIRY_KEY,
            ],
        );
        cmd.arg(wire::session_bytes_field(key)).arg(key.to_string());
        for d in done {
            cmd.arg(wire::format_id(d.id)).arg(wire::stored_len(d.len));
        }
        cmd
    }

    /// One round of a feeder: removes `done` from the queue and, when `read` is given,
    /// reads the next window after that entry (`Some(None)`: from the start).
    async fn feed_round(
        &self,
        key: &SessionKey,
        done: &[Done],
        read: Option<Option<StoredId>>,
    ) -> Result<Option<Vec<QueuedFrame>>, BackendError> {
        let mut cmds = Vec::with_capacity(2);
        if !done.is_empty() {
            cmds.push(self.ack_cmd(key, done));
        }
        if let Some(after) = read {
            let start = match after {
                Some(id) => format!("({}", wire::format_id(id)),
                None => "-".into(),
            };
            let mut cmd = self.scripts.call(Lua::Read, &[&wire::queue_key(key)]);
            cmd.arg(start)
                .arg(feeder::WINDOW_FRAMES)
                .arg(feeder::WINDOW_BYTES);
            cmds.push(cmd);
        }
        let mut redis = self.redis.clone();
        let mut answers = self.scripts.run(&mut redis, cmds).await?;
        if read.is_none() {
            answers.pop().transpose()?;
            return Ok(None);
        }
        let entries = answers.pop().expect("one answer per command")?;
        for answer in answers {
            answer?;
        }
        let entries: Vec<(String, Vec<u8>)> = redis::from_owned_redis_value(entries)?;
        let mut frames = Vec::with_capacity(entries.len());
        for (id, raw) in entries {
            match wire::parse_id(&id).and_then(|id| wire::decode_stored(id, raw.into())) {
                Some(frame) => frames.push(frame),
                None => tracing::warn!(session = %key, id, "skipping a malformed queue entry"),
            }
        }
        Ok(Some(frames))
    }

    /// One plain command, within [`REDIS_TIMEOUT`].
    async fn query<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, BackendError> {
        let mut redis = self.redis.clone();
        let answer = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut redis)).await;
        let answer = answer.map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::IoError, "redis did not answer in time"))
        })?;
        Ok(answer?)
    }

    async fn run_one(&self, cmd: Cmd) -> Result<Value, BackendError> {
        let mut redis = self.redis.clone();
        let answer = self
            .scripts
            .run(&mut redis, vec![cmd])
            .await?
            .pop()
            .expect("one answer per command")?;
        Ok(answer)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn attach(
        &self,
        key: &SessionKey,
        conn: u64,
        stop: CancellationToken,
    ) -> Result<Arc<Mailbox>, BackendError> {
        let inner = &self.inner;
        // A mailbox of its own: frames a replaced connection still holds are in Redis
        // too, and this connection reads them from there.
        let mailbox = inner.local.attach_fresh(key, conn, stop.clone());
        let mut claim = inner.scripts.call(Lua::Claim, &[&wire::owner_key(key)]);
        claim
            .arg(&inner.id)
            .arg(inner.owner_ttl_secs)
            .arg(wire::inbox_key(""))
            .arg(wire::wake_key(""))
            .arg(key.to_string());
        if let Err(e) = inner.run_one(claim).await {
            inner.local.detach(key, conn);
            return Err(e);
        }
        let feeder = self.tasks.spawn(feeder::run(
            inner.clone(),
            key.clone(),
            mailbox.clone(),
            stop,
        ));
        inner.feeders.insert(conn, (mailbox.clone(), feeder));
        Ok(mailbox)
    }

    async fn detach(&self, key: &SessionKey, conn: u64) {
        let inner = &self.inner;
        let current = inner.local.detach(key, conn);
        let mut done = Vec::new();
        if let Some((_, (mailbox, feeder))) = inner.feeders.remove(&conn) {
            // The connection (hence the feeder's stop) has ended and its writer has
            // stopped: what it wrote is final.
            if let Ok(left) = feeder.await {
                done = left;
            }
            done.extend(mailbox.take_done());
        }
        if !done.is_empty() {
            if let Err(e) = inner.run_one(inner.ack_cmd(key, &done)).await {
                tracing::warn!(session = %key, frames = done.len(), error = %e, "could not remove written frames from redis: the next connection gets them again");
            }
        }
        // Another connection of the session may have replaced this one here.
        if current.is_some() && inner.local.connected_mailbox(key).is_none() {
            let mut release = inner.scripts.call(Lua::Release, &[&wire::owner_key(key)]);
            release.arg(&inner.id);
            if let Err(e) = inner.run_one(release).await {
                tracing::debug!(session = %key, error = %e, "could not release a session's owner mark");
            }
        }
    }

    fn deliver_here(&self, key: &SessionKey, frame: &QueuedFrame) -> bool {
        self.inner.local.deliver(key, frame, &self.inner.metrics)
    }

    async fn deliver_connected(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
    ) -> Result<bool, BackendError> {
        self.store(key, frame, true).await
    }

    async fn enqueue(&self, key: &SessionKey, frame: QueuedFrame) -> Result<(), BackendError> {
        self.store(key, &frame, false).await.map(drop)
    }

    /// Does not even look: the script that stores the envelope finds a copy and
    /// refuses it ([`BackendError::Copy`]) in the same atomic step that remembers it
    /// (see the trait). Looking first would cost every envelope a round trip, and an
    /// await before the store would let a connection's pipelined frames be stored out
    /// of order.
    async fn claim(&self, _keys: &SeenKeys, _until: u64, _now: u64) -> Result<Claim, BackendError> {
        Ok(Claim::New { evicted: 0 })
    }

    /// Nothing was remembered for a refused envelope.
    async fn release(&self, _keys: &SeenKeys) {}

    async fn sweep(&self, now: u64) -> usize {
        let inner = &self.inner;
        let mut forget = redis::cmd("ZREMRANGEBYSCORE");
        forget.arg(wire::SEEN_KEY).arg("-inf").arg(now);
        if let Err(e) = inner.query::<usize>(forget).await {
            tracing::debug!(error = %e, "could not sweep the memory of accepted envelopes");
        }
        let mut sweep = inner
            .scripts
            .call(Lua::Sweep, &[wire::EXPIRY_KEY, wire::TOTAL_KEY]);
        sweep.arg(now).arg(SWEEP_QUEUES).arg(wire::PREFIX);
        let dropped = match inner.run_one(sweep).await {
            Ok(n) => redis::from_owned_redis_value::<usize>(n).unwrap_or(0),
            Err(e) => {
                tracing::debug!(error = %e, "could not sweep expired queues in redis");
                0
            }
        };
        dropped + inner.local.sweep(now)
    }

    fn local_queue_depth(&self) -> usize {
        self.inner.local.queue_depth()
    }

    async fn shutdown(&self) {
        // Everything accepted is in Redis already, sessions were detached and the
        // background tasks have stopped with the relay's.
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        Some(self.outbox.clone())
    }

    fn hash_key(&self) -> Option<HashKey> {
        Some(self.hash_key.clone())
    }
}

/// The de-dup hash key every instance on this Redis uses: the first one to start sets
/// it (at random), the others read it.
async fn shared_hash_key(redis: &ConnectionManager) -> Result<HashKey, redis::RedisError> {
    let mut redis = redis.clone();
    let mut fresh = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let (stored,): (Vec<u8>,) = redis::pipe()
        .cmd("SET")
        .arg(wire::HASH_KEY_KEY)
        .arg(&fresh[..])
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(wire::HASH_KEY_KEY)
        .query_async(&mut redis)
        .await?;
    let bytes: [u8; 64] = stored.try_into().map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "the relay's de-dup hash key in redis is not 64 bytes",
            wire::HASH_KEY_KEY.to_string(),
        ))
    })?;
    Ok(HashKey::from_bytes(&bytes))
}
