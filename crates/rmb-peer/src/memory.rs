//! The SDK's receiver memory (design D6) in the peer's Redis, so a restarted peer
//! neither loses nor repeats a request.
//!
//! For a request, "seen" must mean "pushed to its service": a marker written before the
//! push would, after a crash in between, make the sender's copy look like a duplicate of
//! a request nobody ever got. So [`RedisMemory::first_time`] only looks: an envelope is
//! a copy if either of its keys' markers exists (`msgbus.system.seen.<key>`), and the
//! markers are written by the push itself, in the same script
//! ([`store::PUSH_REQUEST`](crate::store::PUSH_REQUEST)). Copies arriving together both
//! pass the look and meet in that script, which pushes one. Replies are never marked
//! here: the push of a reply for an app checks that its destination is not answered
//! yet, which is what a copy of a reply needs.
//!
//! The SDK hands the keys to this memory, not to the event it forwards, so the
//! signature key of each envelope that passed waits here (bounded) until the event loop
//! takes it for the push by the message key, which both sides compute alike.
//!
//! Replies sent are kept under `msgbus.system.answer.<key>` until their deadline, so a
//! copy of an answered request gets the same answer, after a restart too. What is kept
//! is capped in entries and bytes ([`Budget`]), counted in Redis next to the replies
//! (`msgbus.system.answers`, `msgbus.system.answers.bytes`): remote twins choose how
//! many requests they send, and durability must not become a way to fill Redis.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands as _;
use rmb_core::Address;
use rmb_sdk::memory::{EnvelopeKeys, HashKey, ReplyKey};
use rmb_sdk::{Memory, MemoryError};
use tokio_util::sync::CancellationToken;

use crate::redis_conn::{retry, Backoff, Redis, Stop};

/// Where the memory's hash key is kept: entries written with another key never match.
pub const HASH_KEY: &str = "msgbus.system.hashkey";
/// Signature keys waiting for their request's push.
const PENDING_KEYS: usize = 65_536;
/// Largest reply frame kept for answering copies (bigger ones: a copy gets no answer,
/// as with the SDK's own memory over its budget).
pub const MAX_KEPT_REPLY: usize = 1 << 20;

/// The marker that the envelope with this key was handled.
pub fn seen_key(key: u64) -> String {
    format!("msgbus.system.seen.{key:016x}")
}

fn answer_key(key: ReplyKey) -> String {
    format!("msgbus.system.answer.{:016x}", key.0)
}

/// The replies kept, by `<answer key>:<bytes>`, scored by the Unix second they expire.
pub const ANSWERS: &str = "msgbus.system.answers";
/// The bytes of the replies in [`ANSWERS`].
pub const ANSWER_BYTES: &str = "msgbus.system.answers.bytes";

/// How much the memory keeps of replies sent.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub replies: usize,
    pub reply_bytes: usize,
}

impl Budget {
    pub fn of(limits: &crate::Limits) -> Budget {
        Budget {
            replies: limits.kept_replies,
            reply_bytes: limits.kept_reply_bytes,
        }
    }
}

/// Keeps a reply within the budget, first forgetting (from the count) the replies
/// that expired by `now`. Atomic, so concurrent replies never overrun it together.
///
/// KEYS: answer key, [`ANSWERS`], [`ANSWER_BYTES`]. ARGV: frame, ttl, now, max
/// entries, max bytes. Returns `kept`, `duplicate` (kept before) or `full`.
const KEEP_REPLY: &str = r#"
local now = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + (tonumber(string.match(member, ':(%d+)$')) or 0)
  end
  redis.call('ZREM', KEYS[2], unpack(expired))
  if redis.call('DECRBY', KEYS[3], freed) < 0 then redis.call('SET', KEYS[3], 0) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'duplicate' end
local size = string.len(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) or used + size > tonumber(ARGV[5]) then
  return 'full'
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1] .. ':' .. size)
redis.call('INCRBY', KEYS[3], size)
return 'kept'
"#;

/// The SDK's [`Memory`] on the peer's Redis.
pub struct RedisMemory {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    backoff: Backoff,
    key: HashKey,
    pending: Mutex<Pending>,
    budget: Budget,
    keep: redis::Script,
    /// Envelopes found already seen (copies dropped before they reach a service).
    pub(crate) copies_dropped: rmb_metrics::Counter,
    /// Copies of answered requests answered again with the kept reply.
    pub(crate) replies_repeated: rmb_metrics::Counter,
}

/// Signature keys by message key, oldest first out.
#[derive(Default)]
struct Pending {
    by_message: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl RedisMemory {
    /// Opens the memory on `url`, reading its hash key (or storing a new one), waiting
    /// for Redis as long as it takes; `None` if cancelled first.
    pub async fn open(
        url: &str,
        backoff: Backoff,
        budget: Budget,
        cancel: &CancellationToken,
    ) -> Result<Option<RedisMemory>, redis::RedisError> {
        let mut redis = Redis::new(url, backoff)?;
        let mut fresh = vec![0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        let stored = retry(
            &mut redis,
            cancel,
            "reading the de-duplication key",
            Duration::ZERO,
            || {},
            |mut c| {
                let fresh = fresh.clone();
                async move {
                    let _: bool = c.set_nx(HASH_KEY, fresh).await?;
                    c.get::<_, Vec<u8>>(HASH_KEY).await
                }
            },
        )
        .await;
        let bytes = match stored {
            Ok(bytes) => bytes,
            Err(Stop::Cancelled) => return Ok(None),
            Err(Stop::Permanent(e)) => return Err(e),
        };
        let key: [u8; 64] = bytes.try_into().map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "not a de-duplication key",
                format!("{HASH_KEY} does not hold 64 bytes"),
            ))
        })?;
        Ok(Some(RedisMemory {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            backoff,
            key: HashKey::from_bytes(&key),
            pending: Mutex::new(Pending::default()),
            budget,
            keep: redis::Script::new(KEEP_REPLY),
            copies_dropped: Default::default(),
            replies_repeated: Default::default(),
        }))
    }

    /// The message key the SDK computed for a request from `source` to `me` with
    /// `uid` (the key its reply is kept under, too).
    pub fn request_key(&self, source: &Address, me: &Address, uid: &str) -> u64 {
        ReplyKey::of(source, me, uid, &self.key).0
    }

    /// The signature key of the request whose message key is `message_key`, once (if
    /// the SDK handed it over and it was not pushed out by newer ones).
    pub fn take_signature(&self, message_key: u64) -> Option<u64> {
        self.pending.lock().by_message.remove(&message_key)
    }

    fn remember(&self, keys: EnvelopeKeys) {
        // An unsigned envelope has only its message key, which the push computes.
        let Some(signature) = keys.signature else {
            return;
        };
        let mut pending = self.pending.lock();
        if pending.by_message.insert(keys.message, signature).is_none() {
            pending.order.push_back(keys.message);
        }
        while pending.order.len() > PENDING_KEYS {
            if let Some(old) = pending.order.pop_front() {
                pending.by_message.remove(&old);
            }
        }
        // Keys taken by the event loop leave `order` lazily.
        if pending.order.len() > 2 * pending.by_message.len() + 1024 {
            let Pending { by_message, order } = &mut *pending;
            order.retain(|k| by_message.contains_key(k));
        }
    }

    async fn conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.backoff.connect_timeout)
            .set_response_timeout(self.backoff.response_timeout);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn failed(&self, e: redis::RedisError) -> MemoryError {
        *self.conn.lock() = None;
        MemoryError::new(e)
    }
}

#[async_trait]
impl Memory for RedisMemory {
    fn hash_key(&self) -> HashKey {
        self.key.clone()
    }

    /// Looks only (see the module docs). When Redis cannot be asked, the envelope
    /// passes: the push that follows checks the markers again, atomically.
    async fn first_time(
        &self,
        keys: EnvelopeKeys,
        _deadline: u64,
        _now: u64,
    ) -> Result<bool, MemoryError> {
        let looked = match self.conn().await {
            Ok(mut conn) => {
                let markers: Vec<String> = keys.iter().map(seen_key).collect();
                conn.exists::<_, u32>(markers).await
            }
            Err(e) => Err(e),
        };
        match looked {
            Ok(found) if found > 0 => {
                self.copies_dropped.inc();
                return Ok(false);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("cannot look for copies in Redis ({e}); the push will");
                *self.conn.lock() = None;
            }
        }
        self.remember(keys);
        Ok(true)
    }

    /// Replies are never marked (module docs): the push of a reply for an app drops
    /// copies by its destination's state, atomically, so looking here would only cost
    /// a Redis round trip on every reply and find nothing.
    async fn first_time_reply(
        &self,
        _keys: EnvelopeKeys,
        _deadline: u64,
        _now: u64,
    ) -> Result<bool, MemoryError> {
        Ok(true)
    }

    async fn keep_reply(
        &self,
        key: ReplyKey,
        frame: Bytes,
        deadline: u64,
        now: u64,
    ) -> Result<(), MemoryError> {
        if frame.len() > MAX_KEPT_REPLY {
            return Ok(());
        }
        let ttl = deadline.saturating_sub(now).max(1);
        let mut conn = self.conn().await.map_err(|e| self.failed(e))?;
        let status: String = self
            .keep
            .key(answer_key(key))
            .key(ANSWERS)
            .key(ANSWER_BYTES)
            .arg(frame.as_ref())
            .arg(ttl)
            .arg(now)
            .arg(self.budget.replies)
            .arg(self.budget.reply_bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        if status == "full" {
            tracing::debug!("reply memory full: a reply is not kept for copies");
        }
        Ok(())
    }

    async fn reply(&self, key: ReplyKey, _now: u64) -> Result<Option<Bytes>, MemoryError> {
        let mut conn = self.conn().await.map_err(|e| self.failed(e))?;
        let frame: Option<Vec<u8>> = conn
            .get(answer_key(key))
            .await
            .map_err(|e| self.failed(e))?;
        if frame.is_some() {
            self.replies_repeated.inc();
        }
        Ok(frame.map(Bytes::from))
    }
}
