//! Redis backend: several relay processes serving the same domains share sessions and
//! queues, so a twin connected to instance A receives what was sent to instance B, and
//! queued envelopes survive a relay restart.
//!
//! Keys (all under `rmb.relay.`, so a Redis shared with rmb-peer's `msgbus.*` is fine):
//! - `owner.<session>` → id of the instance the session is connected to (expires unless
//!   refreshed by that instance's heartbeat, so a crashed instance is forgotten);
//! - `inbox.<instance>` → list of entries other instances hand to that instance: a frame
//!   for one of its sessions, a "kick" (a newer connection of the session exists
//!   elsewhere) or a "drain" (something was queued for one of its sessions);
//! - `queue.<session>` → list of `deadline ‖ frame` waiting for the session.
//!
//! Delivery between two sessions on the same instance never touches Redis.
//!
//! Cross-instance delivery costs one Redis round trip on each side in the common case:
//! the sender remembers a session's owner for [`OWNER_CACHE`] (a stale answer is
//! harmless: an instance handed a frame for a session it no longer holds queues it and
//! pokes the real owner, as below), and the receiver takes whatever else is waiting in
//! its inbox with one LPOP after each BLPOP.
//!
//! Races are closed by ordering: a connecting instance sets `owner` *before* draining
//! the queue, and a queueing instance reads `owner` *after* pushing (in one MULTI) and
//! pokes the owner to drain again; so a frame is either drained or poked for.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::memory::note_dropped;
use super::{Backend, BackendError, LocalSessions};
use crate::dedup::{Claim, SeenKeys, SeenMemory};
use crate::mailbox::{Mailbox, MailboxLimits, QueuedFrame};
use crate::metrics::Metrics;
use crate::session_key::SessionKey;

/// Queues and inboxes disappear this long after their last push (longer than any
/// envelope may live).
const LIST_TTL_SECS: i64 = 3600;
const DRAIN_BATCH: usize = 256;
/// Inbox entries taken per round trip after a blocking pop returned one.
const INBOX_BATCH: usize = 256;
/// How long a session's owner (another instance) is remembered by a sender.
const OWNER_CACHE: Duration = Duration::from_secs(1);

const KIND_FRAME: u8 = b'F';
const KIND_KICK: u8 = b'K';
const KIND_DRAIN: u8 = b'D';

fn owner_key(key: &SessionKey) -> String {
    format!("rmb.relay.owner.{key}")
}

fn queue_key(key: &SessionKey) -> String {
    format!("rmb.relay.queue.{key}")
}

fn inbox_key(instance: &str) -> String {
    format!("rmb.relay.inbox.{instance}")
}

fn encode_queued(frame: &QueuedFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + frame.data.len());
    out.extend_from_slice(&frame.deadline.to_be_bytes());
    out.extend_from_slice(&frame.data);
    out
}

fn decode_queued(raw: &[u8]) -> Option<QueuedFrame> {
    let deadline = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    Some(QueuedFrame {
        deadline,
        data: Bytes::copy_from_slice(&raw[8..]),
    })
}

fn encode_inbox(kind: u8, key: &SessionKey, frame: Option<&QueuedFrame>) -> Vec<u8> {
    let key = key.to_string();
    let mut out = Vec::with_capacity(3 + key.len() + frame.map_or(0, |f| 8 + f.data.len()));
    out.push(kind);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    if let Some(frame) = frame {
        out.extend_from_slice(&encode_queued(frame));
    }
    out
}

fn decode_inbox(raw: &[u8]) -> Option<(u8, SessionKey, Option<QueuedFrame>)> {
    let kind = *raw.first()?;
    let len = u16::from_be_bytes(raw.get(1..3)?.try_into().ok()?) as usize;
    let key = SessionKey::parse(std::str::from_utf8(raw.get(3..3 + len)?).ok()?)?;
    let rest = &raw[3 + len..];
    let frame = if kind == KIND_FRAME {
        Some(decode_queued(rest)?)
    } else {
        None
    };
    Some((kind, key, frame))
}

pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    redis: ConnectionManager,
    url: String,
    local: LocalSessions,
    /// Per instance until the durable work shares it through Redis.
    seen: SeenMemory,
    limits: MailboxLimits,
    metrics: Arc<Metrics>,
    owner_ttl_secs: u64,
    /// Owners (other instances) of remote sessions, with when they were looked up.
    owners: DashMap<SessionKey, (Arc<str>, Instant)>,
}

impl RedisBackend {
    pub async fn connect(
        url: &str,
        limits: MailboxLimits,
        seen_capacity: usize,
        metrics: Arc<Metrics>,
        heartbeat: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let redis = ConnectionManager::new(client).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            id,
            redis,
            url: url.to_string(),
            local: LocalSessions::new(limits),
            seen: SeenMemory::new(seen_capacity),
            limits,
            metrics,
            // Three missed heartbeats and the mark is gone.
            owner_ttl_secs: (heartbeat.as_secs() * 3).max(3),
            owners: DashMap::new(),
        });
        tracing::info!(instance = %inner.id, "redis backend connected");
        tasks.spawn(inbox_loop(inner.clone(), shutdown.clone()));
        tasks.spawn(heartbeat_loop(inner.clone(), heartbeat, shutdown));
        Ok(RedisBackend { inner })
    }
}

impl Inner {
    /// Moves queued frames of `key` from Redis into its local mailbox (appended).
    async fn drain_queue_into(
        &self,
        key: &SessionKey,
        mailbox: &Mailbox,
    ) -> Result<(), BackendError> {
        let frames = self.take_queue(key).await?;
        for frame in frames {
            let outcome = mailbox.push(frame);
            note_dropped(&self.metrics, key, outcome.dropped);
        }
        Ok(())
    }

    async fn take_queue(&self, key: &SessionKey) -> Result<Vec<QueuedFrame>, BackendError> {
        let mut redis = self.redis.clone();
        let queue = queue_key(key);
        let mut frames = Vec::new();
        loop {
            let batch: Option<Vec<Vec<u8>>> = redis
                .lpop(&queue, std::num::NonZeroUsize::new(DRAIN_BATCH))
                .await?;
            let batch = batch.unwrap_or_default();
            let done = batch.len() < DRAIN_BATCH;
            frames.extend(batch.iter().filter_map(|raw| decode_queued(raw)));
            if done {
                return Ok(frames);
            }
        }
    }

    /// Pushes a frame onto the Redis queue of `key` and pokes its owner, if any.
    async fn push_queue(&self, key: &SessionKey, frame: &QueuedFrame) -> Result<(), BackendError> {
        let mut redis = self.redis.clone();
        let queue = queue_key(key);
        let cap = self.limits.max_frames as isize;
        let (len, owner): (usize, Option<String>) = redis::pipe()
            .atomic()
            .rpush(&queue, encode_queued(frame))
            .ltrim(&queue, -cap, -1)
            .ignore()
            .expire(&queue, LIST_TTL_SECS)
            .ignore()
            .get(owner_key(key))
            .query_async(&mut redis)
            .await?;
        if len > self.limits.max_frames {
            note_dropped(&self.metrics, key, len - self.limits.max_frames);
        }
        match owner {
            Some(owner) if owner == self.id => {
                // Connected here after all (it attached between our checks).
                if let Some(mailbox) = self.local.connected_mailbox(key) {
                    self.drain_queue_into(key, &mailbox).await?;
                }
            }
            Some(owner) => {
                self.send_inbox(&owner, encode_inbox(KIND_DRAIN, key, None))
                    .await?;
            }
            None => {}
        }
        Ok(())
    }

    async fn send_inbox(&self, instance: &str, entry: Vec<u8>) -> Result<(), BackendError> {
        let mut redis = self.redis.clone();
        let inbox = inbox_key(instance);
        redis::pipe()
            .rpush(&inbox, entry)
            .ignore()
            .expire(&inbox, LIST_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    async fn handle_inbox_entries(&self, entries: impl IntoIterator<Item = Vec<u8>>) {
        for raw in entries {
            if let Err(e) = self.handle_inbox_entry(&raw).await {
                tracing::warn!(error = %e, "could not handle a relay inbox entry");
            }
        }
    }

    async fn handle_inbox_entry(&self, raw: &[u8]) -> Result<(), BackendError> {
        let Some((kind, key, frame)) = decode_inbox(raw) else {
            tracing::warn!("ignoring a malformed relay inbox entry");
            return Ok(());
        };
        match (kind, frame) {
            (KIND_FRAME, Some(frame)) => {
                if !self.local.deliver(&key, &frame, &self.metrics) {
                    // The session left meanwhile: keep the frame for its next connection.
                    self.push_queue(&key, &frame).await?;
                }
            }
            (KIND_KICK, _) => {
                if self.local.kick(&key) {
                    tracing::info!(session = %key, "session connected on another instance: closing it here");
                }
            }
            (KIND_DRAIN, _) => {
                if let Some(mailbox) = self.local.connected_mailbox(&key) {
                    self.drain_queue_into(&key, &mailbox).await?;
                }
            }
            _ => tracing::warn!(kind, "ignoring an unknown relay inbox entry"),
        }
        Ok(())
    }
}

/// Consumes this instance's inbox with a dedicated connection (BLPOP would otherwise
/// stall the shared multiplexed one).
async fn inbox_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let inbox = inbox_key(&inner.id);
    let mut backoff = Duration::from_millis(100);
    'reconnect: loop {
        let conn = async {
            redis::Client::open(inner.url.as_str())?
                .get_multiplexed_async_connection()
                .await
        };
        let mut conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = conn => match c {
                Ok(c) => { backoff = Duration::from_millis(100); c }
                Err(e) => {
                    tracing::warn!(error = %e, "redis inbox connection failed, retrying");
                    // A tracked task: shutdown waits for it, so it must not sleep through.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'reconnect;
                }
            }
        };
        loop {
            let popped: Result<Option<(String, Vec<u8>)>, _> = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = conn.blpop(&inbox, 1.0) => r,
            };
            match popped {
                Ok(Some((_, raw))) => {
                    inner.handle_inbox_entries(std::iter::once(raw)).await;
                    // BLPOP hands over one entry; take what else is waiting in batches.
                    loop {
                        let batch = NonZeroUsize::new(INBOX_BATCH);
                        let more: Result<Vec<Vec<u8>>, _> = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            r = conn.lpop(&inbox, batch) => r,
                        };
                        match more {
                            Ok(more) => {
                                let full = more.len() == INBOX_BATCH;
                                inner.handle_inbox_entries(more).await;
                                if !full {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "redis inbox read failed, reconnecting");
                                continue 'reconnect;
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis inbox read failed, reconnecting");
                    continue 'reconnect;
                }
            }
        }
    }
}

/// Refreshes the owner marks of local sessions; re-drains queues when a mark had been
/// lost (e.g. Redis restarted without persistence).
async fn heartbeat_loop(inner: Arc<Inner>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (key, mailbox) in inner.local.connected() {
            let mut redis = inner.redis.clone();
            let previous: Result<Option<String>, _> = redis::cmd("SET")
                .arg(owner_key(&key))
                .arg(&inner.id)
                .arg("EX")
                .arg(inner.owner_ttl_secs)
                .arg("GET")
                .query_async(&mut redis)
                .await;
            match previous {
                Ok(None) => {
                    if let Err(e) = inner.drain_queue_into(&key, &mailbox).await {
                        tracing::warn!(session = %key, error = %e, "could not drain queue");
                    }
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis heartbeat failed");
                    break;
                }
            }
        }
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
        let mailbox = inner.local.attach(key, conn, stop);
        let mut redis = inner.redis.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(owner_key(key))
            .arg(&inner.id)
            .arg("EX")
            .arg(inner.owner_ttl_secs)
            .arg("GET")
            .query_async(&mut redis)
            .await?;
        if let Some(previous) = previous.filter(|p| *p != inner.id) {
            inner
                .send_inbox(&previous, encode_inbox(KIND_KICK, key, None))
                .await?;
        }
        // Queued frames are older than anything pushed since attach: put them first.
        let queued = inner.take_queue(key).await?;
        mailbox.requeue_front(queued);
        Ok(mailbox)
    }

    async fn detach(&self, key: &SessionKey, conn: u64) {
        let inner = &self.inner;
        let Some(mailbox) = inner.local.detach(key, conn) else {
            return;
        };
        let leftover = mailbox.take_all();
        let mut redis = inner.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !leftover.is_empty() {
            // Back to the head of the queue, oldest first.
            let queue = queue_key(key);
            let entries: Vec<Vec<u8>> = leftover.iter().rev().map(encode_queued).collect();
            pipe.lpush(&queue, entries).ignore();
            pipe.expire(&queue, LIST_TTL_SECS).ignore();
        }
        let release = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let result = async {
            pipe.query_async::<()>(&mut redis).await?;
            release
                .key(owner_key(key))
                .arg(&inner.id)
                .invoke_async::<i64>(&mut redis)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(session = %key, lost = leftover.len(), error = %e, "could not save a closed session's queue to redis");
        }
    }

    fn deliver_local(&self, key: &SessionKey, frame: &QueuedFrame) -> bool {
        self.inner.local.deliver(key, frame, &self.inner.metrics)
    }

    async fn deliver_connected(
        &self,
        key: &SessionKey,
        frame: &QueuedFrame,
    ) -> Result<bool, BackendError> {
        let inner = &self.inner;
        if self.deliver_local(key, frame) {
            return Ok(true);
        }
        let cached = inner
            .owners
            .get(key)
            .filter(|entry| entry.1.elapsed() < OWNER_CACHE)
            .map(|entry| entry.0.clone());
        let owner = match cached {
            Some(owner) => Some(owner),
            None => {
                let mut redis = inner.redis.clone();
                let owner: Option<String> = redis.get(owner_key(key)).await?;
                match owner {
                    Some(owner) if owner != inner.id => {
                        let owner: Arc<str> = owner.into();
                        inner
                            .owners
                            .insert(key.clone(), (owner.clone(), Instant::now()));
                        Some(owner)
                    }
                    _ => {
                        inner.owners.remove(key);
                        None
                    }
                }
            }
        };
        match owner {
            Some(owner) => {
                inner
                    .send_inbox(&owner, encode_inbox(KIND_FRAME, key, Some(frame)))
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn enqueue(&self, key: &SessionKey, frame: QueuedFrame) -> Result<(), BackendError> {
        self.inner.push_queue(key, &frame).await
    }

    async fn claim(&self, keys: &SeenKeys, deadline: u64, now: u64) -> Result<Claim, BackendError> {
        Ok(self.inner.seen.claim(keys, deadline, now))
    }

    async fn release(&self, keys: &SeenKeys) {
        self.inner.seen.release(keys);
    }

    async fn sweep(&self, now: u64) -> usize {
        self.inner.seen.sweep(now);
        // Redis lists expire on their own; expired frames in them are skipped on drain.
        self.inner
            .owners
            .retain(|_, (_, looked_up)| looked_up.elapsed() < OWNER_CACHE);
        self.inner.local.sweep(now)
    }

    fn local_queue_depth(&self) -> usize {
        self.inner.local.queue_depth()
    }

    async fn shutdown(&self) {
        // Sessions were closed (detach saved their mailboxes); save what is left.
        let mut saved = 0;
        for (key, frames) in self.inner.local.drain_all() {
            for frame in frames {
                if self.inner.push_queue(&key, &frame).await.is_ok() {
                    saved += 1;
                }
            }
        }
        if saved > 0 {
            tracing::info!(saved, "moved pending envelopes to redis");
        }
    }
}

/// Runs both entry decoders on `raw`, for the fuzz target `relay_redis_entry`
/// (`fuzz/`): entries come from a Redis that other instances, and whoever else can
/// reach it, write to, so decoding must never panic.
#[doc(hidden)]
pub fn decode_entry_for_fuzzing(raw: &[u8]) {
    let _ = decode_inbox(raw);
    let _ = decode_queued(raw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_entries_round_trip() {
        let key = SessionKey::new(7, Some("s:1".into()));
        let frame = QueuedFrame {
            data: Bytes::from_static(b"abc"),
            deadline: 99,
        };
        let raw = encode_inbox(KIND_FRAME, &key, Some(&frame));
        assert_eq!(
            decode_inbox(&raw),
            Some((KIND_FRAME, key.clone(), Some(frame)))
        );
        let raw = encode_inbox(KIND_KICK, &key, None);
        assert_eq!(decode_inbox(&raw), Some((KIND_KICK, key, None)));
        assert_eq!(decode_inbox(b"F\x00\x09ab"), None);
        assert_eq!(decode_queued(b"short"), None);
    }
}
