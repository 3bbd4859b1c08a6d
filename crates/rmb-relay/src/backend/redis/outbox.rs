//! The durable federation outbox: a Redis stream consumed by all instances through one
//! consumer group. An instance takes entries (they stay in its pending list), posts
//! them to the other relay, and removes them once done. An instance whose liveness
//! mark expired is dead: the others take over what it had pending ([`scripts::RECLAIM`])
//! at their next look, so its work is done once, by someone, before it expires.
//!
//! [`scripts::RECLAIM`]: super::scripts::RECLAIM

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{ErrorKind, Value};

use super::appender::{Appender, Target};
use super::wire;
use super::{Inner, Lua};
use crate::backend::{BackendError, Outbox};
use crate::mailbox::{Done, QueuedFrame, StoredId};

/// How long one take waits for new entries, milliseconds.
const BLOCK_MS: u64 = 1000;

pub(super) struct RedisOutbox {
    inner: Arc<Inner>,
    appender: Appender,
    /// A connection of its own: the blocking read would stall the shared one.
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Entries this process holds (taken, not yet done).
    held: Mutex<HashSet<StoredId>>,
    /// When dead instances' entries were last looked for.
    reclaimed: Mutex<Option<Instant>>,
    reclaim_every: Duration,
    /// Set when a read failed: Redis may have handed us entries we never got, which sit
    /// in our pending list; the next take reads that list again.
    recheck_own: Mutex<bool>,
}

impl RedisOutbox {
    pub(super) fn new(inner: Arc<Inner>, appender: Appender, reclaim_every: Duration) -> Self {
        RedisOutbox {
            inner,
            appender,
            reader: tokio::sync::Mutex::new(None),
            held: Mutex::new(HashSet::new()),
            reclaimed: Mutex::new(None),
            reclaim_every,
            recheck_own: Mutex::new(false),
        }
    }

    fn reclaim_due(&self) -> bool {
        let mut last = self.reclaimed.lock();
        let due = last.map_or(true, |t| t.elapsed() >= self.reclaim_every);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Entries dead instances held, now ours.
    async fn reclaim(&self, max: usize) -> Result<Vec<QueuedFrame>, BackendError> {
        let inner = &self.inner;
        let mut cmd = inner.scripts.call(Lua::Reclaim, &[wire::OUTBOX_KEY]);
        cmd.arg(wire::OUTBOX_GROUP)
            .arg(&inner.id)
            .arg(wire::alive_key(""))
            .arg(max);
        match inner.run_one(cmd).await {
            Ok(entries) => {
                let entries: Vec<(String, Vec<u8>)> = redis::from_owned_redis_value(entries)?;
                let frames = decode(entries.into_iter());
                if !frames.is_empty() {
                    tracing::info!(
                        entries = frames.len(),
                        "took over federation work of a relay instance that died"
                    );
                }
                Ok(frames)
            }
            // No outbox (nothing was ever federated) or no group yet: nothing to take.
            Err(BackendError::Redis(e)) if e.kind() == ErrorKind::ResponseError => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        max: usize,
        own: bool,
    ) -> Result<Vec<QueuedFrame>, redis::RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(wire::OUTBOX_GROUP)
            .arg(&self.inner.id)
            .arg("COUNT")
            .arg(max);
        if !own {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        // `0`: our own pending entries; `>`: new ones.
        cmd.arg("STREAMS")
            .arg(wire::OUTBOX_KEY)
            .arg(if own { "0" } else { ">" });
        let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                create_group(conn).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(|entry| match entry.map.get("e") {
                Some(Value::BulkString(raw)) => Some((entry.id, raw.clone())),
                _ => None,
            });
        Ok(decode(entries))
    }
}

async fn create_group(conn: &mut MultiplexedConnection) -> Result<(), redis::RedisError> {
    let created: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(wire::OUTBOX_KEY)
        .arg(wire::OUTBOX_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

fn decode(entries: impl Iterator<Item = (String, Vec<u8>)>) -> Vec<QueuedFrame> {
    entries
        .filter_map(|(id, raw)| {
            let frame = wire::parse_id(&id).and_then(|id| wire::decode_stored(id, raw.into()));
            if frame.is_none() {
                tracing::warn!(id, "skipping a malformed outbox entry");
            }
            frame
        })
        .collect()
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn put(&self, frame: &QueuedFrame) -> Result<(), BackendError> {
        self.appender.append(Target::Outbox, frame).await.map(drop)
    }

    async fn take(&self, max: usize) -> Result<Vec<QueuedFrame>, BackendError> {
        let mut frames = if self.reclaim_due() {
            self.reclaim(max).await?
        } else {
            Vec::new()
        };
        if frames.is_empty() {
            let mut reader = self.reader.lock().await;
            let conn = match reader.as_mut() {
                Some(conn) => conn,
                None => {
                    let mut conn = redis::Client::open(self.inner.url.as_str())?
                        .get_multiplexed_async_connection()
                        .await?;
                    create_group(&mut conn).await?;
                    reader.insert(conn)
                }
            };
            let own = std::mem::take(&mut *self.recheck_own.lock());
            match self.read(conn, max, own).await {
                Ok(read) => {
                    let held = self.held.lock();
                    frames = read
                        .into_iter()
                        .filter(|f| f.id.is_some_and(|id| !held.contains(&id)))
                        .collect();
                }
                Err(e) => {
                    *reader = None;
                    *self.recheck_own.lock() = true;
                    return Err(e.into());
                }
            }
        }
        self.held.lock().extend(frames.iter().filter_map(|f| f.id));
        Ok(frames)
    }

    async fn done(&self, done: Done) -> Result<(), BackendError> {
        let inner = &self.inner;
        let mut cmd = inner
            .scripts
            .call(Lua::OutboxDone, &[wire::OUTBOX_KEY, wire::OUTBOX_COUNT_KEY]);
        cmd.arg(wire::OUTBOX_GROUP)
            .arg(wire::format_id(done.id))
            .arg(wire::stored_len(done.len));
        let result = inner.run_one(cmd).await.map(drop);
        self.held.lock().remove(&done.id);
        if result.is_err() {
            // Still pending for us: the next take reads it again, and it is posted
            // again (the receiving relay drops the copy).
            *self.recheck_own.lock() = true;
        }
        result
    }

    async fn leave(&self) {
        let mut redis = self.inner.redis.clone();
        let left: Result<(), _> = redis::cmd("DEL")
            .arg(wire::alive_key(&self.inner.id))
            .query_async(&mut redis)
            .await;
        if let Err(e) = left {
            tracing::debug!(error = %e, "could not clear this instance's liveness mark");
        }
    }
}
