//! What a receiver remembers (design D6): the envelopes it has seen, so that a copy is
//! not handled twice, and the replies it sent, so that a copy of a request it already
//! answered gets the same answer instead of a second run.
//!
//! It sits behind [`Memory`] (async and fallible) so that a gateway can keep it where a
//! restart does not lose it: rmb-peer keeps it in Redis, so a restarted receiver
//! neither loses nor repeats. [`InMemory`] is the default; it lasts as long as the
//! process (a copy arriving after a restart runs again: docs/compatibility.md).
//!
//! Keys are fixed-size keyed hashes ([`EnvelopeKeys`], [`ReplyKey`]), so an entry costs
//! the same whatever the sender put in its uid or session, and no sender can aim a
//! collision at someone else's entry without the [`HashKey`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rmb_core::proto::{Message, Request};
pub use rmb_core::rules::HashKey;
use rmb_core::rules::{message_key, signature_key};
use rmb_core::time::MAX_TTL;
use rmb_core::{Address, Envelope};

/// The two keys an envelope is remembered by (design D1(a), the same as the relay's,
/// from [`rmb_core::rules`]): a copy matches on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvelopeKeys {
    /// Kind, source and destination (twin and exact session) and uid.
    pub message: u64,
    /// Source twin and signature (`None` for an unsigned envelope): the same signature
    /// on a shifted envelope (a new uid cut from its neighbours, issue 12) is still a
    /// copy.
    pub signature: Option<u64>,
}

impl EnvelopeKeys {
    /// The keys of `env`, hashed with `key`.
    pub fn of(env: &Envelope, key: &HashKey) -> Self {
        EnvelopeKeys {
            message: message_key(key, env),
            signature: signature_key(key, env),
        }
    }

    /// Both keys (one for an unsigned envelope).
    pub fn iter(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.message).chain(self.signature)
    }
}

/// The last moment (unix s) a copy of `env` could still be accepted: its deadline,
/// capped to [`MAX_TTL`] from now. What the memory keeps its keys until.
pub fn remember_until(env: &Envelope, now: u64) -> u64 {
    env.timestamp
        .saturating_add(env.expiration)
        .min(now.saturating_add(MAX_TTL))
}

/// The key of the reply to a request: the request's own message key, so a copy of the
/// request finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyKey(pub u64);

impl ReplyKey {
    /// The key of the reply to request `uid` that `requester` sent to `me`.
    pub fn of(requester: &Address, me: &Address, uid: &str, key: &HashKey) -> Self {
        let request = Envelope {
            uid: uid.to_string(),
            source: Some(requester.clone()),
            destination: Some(me.clone()),
            message: Some(Message::Request(Request::default())),
            ..Default::default()
        };
        ReplyKey(message_key(key, &request))
    }

    /// The key of the reply to `request`.
    pub fn for_request(request: &Envelope, key: &HashKey) -> Self {
        ReplyKey(message_key(key, request))
    }
}

/// A memory that could not answer (e.g. its store is down).
#[derive(Debug, thiserror::Error)]
#[error("receiver memory: {0}")]
pub struct MemoryError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl MemoryError {
    /// Wraps the store's error.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        MemoryError(e.into())
    }
}

/// Where a receiver keeps what it has seen and what it answered. Times are unix
/// seconds; an entry may be forgotten after its `deadline` (a copy arriving later is
/// refused as expired anyway).
///
/// When it fails, the client refuses the request with an error reply (code 500) rather
/// than risk running it twice; a reply is still delivered.
#[async_trait]
pub trait Memory: Send + Sync + 'static {
    /// The key the client hashes [`EnvelopeKeys`] and [`ReplyKey`] with. A memory that
    /// outlives the process must return the same key after a restart: keep 64 random
    /// bytes next to the entries and build it with [`HashKey::from_bytes`].
    fn hash_key(&self) -> HashKey;

    /// Records both keys until `deadline`; `true` only if neither was recorded before
    /// (the first time this envelope is seen), `false` for a copy. Must be atomic
    /// against concurrent calls with the same keys: two copies arriving at once get one
    /// `true` between them.
    async fn first_time(
        &self,
        keys: EnvelopeKeys,
        deadline: u64,
        now: u64,
    ) -> Result<bool, MemoryError>;

    /// [`first_time`](Memory::first_time) for a reply (a response or an error reply)
    /// to one of our requests. By default the same. A memory whose owner drops copies
    /// of replies where it delivers them (rmb-peer's push of a reply for an app checks
    /// that its destination is not answered yet) may answer `true` without looking,
    /// which saves a round trip to its store on every reply.
    async fn first_time_reply(
        &self,
        keys: EnvelopeKeys,
        deadline: u64,
        now: u64,
    ) -> Result<bool, MemoryError> {
        self.first_time(keys, deadline, now).await
    }

    /// Keeps the reply `frame` sent for request `key` until `deadline`. A memory may
    /// decline to keep it (e.g. it is over its budget): copies then get no answer.
    async fn keep_reply(
        &self,
        key: ReplyKey,
        frame: Bytes,
        deadline: u64,
        now: u64,
    ) -> Result<(), MemoryError>;

    /// The reply kept for request `key`, if any.
    async fn reply(&self, key: ReplyKey, now: u64) -> Result<Option<Bytes>, MemoryError>;
}

/// Budgets of [`InMemory`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryLimits {
    /// Envelopes remembered (two fixed-size keys each, about 100 bytes). When full,
    /// the ones closest to their deadline are forgotten first.
    pub envelopes: usize,
    /// Replies kept, at most this many...
    pub replies: usize,
    /// ...and this many bytes (frames plus a fixed cost per entry).
    pub reply_bytes: usize,
}

impl Default for MemoryLimits {
    /// 200 000 envelopes (about 20 MiB), 16 384 replies and 32 MiB of them.
    fn default() -> Self {
        MemoryLimits {
            envelopes: 200_000,
            replies: 16_384,
            reply_bytes: 32 << 20,
        }
    }
}

/// The default [`Memory`]: bounded maps in this process.
#[derive(Debug)]
pub struct InMemory {
    key: HashKey,
    seen: Mutex<Seen>,
    replies: Mutex<ReplyCache>,
}

impl InMemory {
    /// An empty memory with a random hash key.
    pub fn new(limits: MemoryLimits) -> Self {
        InMemory {
            key: HashKey::random(),
            seen: Mutex::new(Seen::new(limits.envelopes.saturating_mul(2))),
            replies: Mutex::new(ReplyCache::new(limits.replies, limits.reply_bytes)),
        }
    }
}

impl Default for InMemory {
    fn default() -> Self {
        Self::new(MemoryLimits::default())
    }
}

#[async_trait]
impl Memory for InMemory {
    fn hash_key(&self) -> HashKey {
        self.key.clone()
    }

    async fn first_time(
        &self,
        keys: EnvelopeKeys,
        deadline: u64,
        now: u64,
    ) -> Result<bool, MemoryError> {
        Ok(self.seen.lock().first_time(keys, deadline, now))
    }

    async fn keep_reply(
        &self,
        key: ReplyKey,
        frame: Bytes,
        deadline: u64,
        now: u64,
    ) -> Result<(), MemoryError> {
        self.replies.lock().insert(key, frame, deadline, now);
        Ok(())
    }

    async fn reply(&self, key: ReplyKey, now: u64) -> Result<Option<Bytes>, MemoryError> {
        Ok(self.replies.lock().get(key, now))
    }
}

/// Keys seen, each kept until its deadline, at most `capacity` of them; when full, the
/// one closest to its deadline goes first (it has the least of its window left).
#[derive(Debug)]
struct Seen {
    until: HashMap<u64, u64>,
    /// Every key in `until` exactly once, soonest deadline on top.
    by_deadline: BinaryHeap<Reverse<(u64, u64)>>,
    capacity: usize,
}

impl Seen {
    fn new(capacity: usize) -> Self {
        Seen {
            until: HashMap::new(),
            by_deadline: BinaryHeap::new(),
            capacity: capacity.max(2),
        }
    }

    fn first_time(&mut self, keys: EnvelopeKeys, deadline: u64, now: u64) -> bool {
        self.expire(now);
        let first = !keys.iter().any(|key| self.until.contains_key(&key));
        for key in keys.iter() {
            if self.until.contains_key(&key) {
                continue;
            }
            if self.until.len() >= self.capacity {
                self.pop();
            }
            self.until.insert(key, deadline);
            self.by_deadline.push(Reverse((deadline, key)));
        }
        first
    }

    /// Forgets keys whose deadline has passed.
    fn expire(&mut self, now: u64) {
        while self
            .by_deadline
            .peek()
            .is_some_and(|Reverse((deadline, _))| *deadline < now)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(Reverse((_, key))) = self.by_deadline.pop() {
            self.until.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.len()
    }
}

/// What a kept reply costs beyond its frame (map and queue entries), roughly.
const REPLY_OVERHEAD: usize = 64;

/// Replies recently sent, each kept until its deadline, within a count and a byte
/// budget (the oldest go first).
#[derive(Debug)]
struct ReplyCache {
    /// Reply frames with their deadlines and the insertion number that owns them.
    replies: HashMap<ReplyKey, (u64, u64, Bytes)>,
    /// (deadline, key, insertion number), oldest first.
    order: VecDeque<(u64, ReplyKey, u64)>,
    inserted: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl ReplyCache {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        ReplyCache {
            replies: HashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// Keeps `frame` until `deadline`. A reply bigger than the whole budget is not kept.
    fn insert(&mut self, key: ReplyKey, frame: Bytes, deadline: u64, now: u64) {
        self.expire(now);
        let cost = frame.len() + REPLY_OVERHEAD;
        if cost > self.max_bytes {
            return;
        }
        while self.order.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            if !self.pop_oldest() {
                break;
            }
        }
        self.inserted += 1;
        self.bytes += cost;
        if let Some((_, _, old)) = self.replies.insert(key, (self.inserted, deadline, frame)) {
            self.bytes -= old.len() + REPLY_OVERHEAD;
        }
        self.order.push_back((deadline, key, self.inserted));
    }

    fn get(&mut self, key: ReplyKey, now: u64) -> Option<Bytes> {
        self.expire(now);
        self.replies.get(&key).map(|(_, _, frame)| frame.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.replies.len()
    }

    fn expire(&mut self, now: u64) {
        while self
            .order
            .front()
            .is_some_and(|(deadline, _, _)| *deadline < now)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((_, key, number)) = self.order.pop_front() else {
            return false;
        };
        // A key inserted twice appears twice in `order`; only its last insertion owns
        // the entry.
        if self
            .replies
            .get(&key)
            .is_some_and(|(owner, _, _)| *owner == number)
        {
            if let Some((_, _, frame)) = self.replies.remove(&key) {
                self.bytes -= frame.len() + REPLY_OVERHEAD;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outgoing::{seal, Outgoing};
    use rmb_core::{KeyType, Signer};

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn keys(message: u64, signature: u64) -> EnvelopeKeys {
        EnvelopeKeys {
            message,
            signature: Some(signature),
        }
    }

    fn request(uid: &str, from: Address) -> Envelope {
        let signer = Signer::from_seed(&[1; 32], KeyType::Ed25519).unwrap();
        let out = Outgoing::request(uid, from, Address::twin(2), "echo", b"x".to_vec(), 60);
        seal(out, &signer, None, 1000)
    }

    #[test]
    fn a_reply_is_kept_under_its_request_and_keys_tell_sessions_apart() {
        let key = HashKey::from_bytes(&[7; 64]);
        let env = request("u1", Address::twin(1));
        let of = |env: &Envelope| EnvelopeKeys::of(env, &key);
        assert_eq!(of(&env), of(&env.clone()), "a copy has the same keys");
        assert_eq!(
            ReplyKey::of(&Address::twin(1), &Address::twin(2), "u1", &key),
            ReplyKey::for_request(&env, &key)
        );
        // The same uid from another session ("" is not none) is another envelope.
        let mut other = env.clone();
        other.source = Some(Address::session(1, ""));
        assert_ne!(of(&other).message, of(&env).message);
        assert_ne!(
            ReplyKey::for_request(&other, &key),
            ReplyKey::for_request(&env, &key)
        );
        assert_eq!(of(&env).iter().count(), 2);
    }

    #[test]
    fn seen_matches_a_copy_on_either_key_until_its_deadline() {
        let mut seen = Seen::new(10);
        assert!(seen.first_time(keys(1, 2), 1060, 1000));
        assert!(!seen.first_time(keys(1, 2), 1060, 1001));
        assert!(!seen.first_time(keys(9, 2), 1060, 1001), "same signature");
        assert!(!seen.first_time(keys(1, 9), 1060, 1001), "same uid");
        assert!(seen.first_time(keys(3, 4), 1060, 1001));
        // After the deadline the keys are gone (a copy would be refused as expired).
        assert!(seen.first_time(keys(1, 2), 2000, 1061));
    }

    #[test]
    fn seen_is_bounded_and_forgets_the_soonest_deadline_first() {
        let mut seen = Seen::new(4);
        assert!(seen.first_time(keys(1, 2), 5000, 1000));
        assert!(seen.first_time(keys(3, 4), 1100, 1000));
        assert!(seen.first_time(keys(5, 6), 5000, 1000));
        assert_eq!(seen.len(), 4);
        // The envelope with the least of its window left went.
        assert!(seen.first_time(keys(3, 4), 1100, 1000));
        assert!(!seen.first_time(keys(5, 6), 5000, 1000));
    }

    #[test]
    fn reply_cache_keeps_replies_until_their_deadline() {
        let mut cache = ReplyCache::new(10, 1000);
        cache.insert(ReplyKey(1), frame("reply"), 200, 100);
        assert_eq!(cache.get(ReplyKey(1), 200), Some(frame("reply")));
        assert_eq!(cache.get(ReplyKey(2), 150), None);
        assert_eq!(cache.get(ReplyKey(1), 201), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn reply_cache_stays_within_its_budgets() {
        let mut cache = ReplyCache::new(3, 10 + 5 * REPLY_OVERHEAD);
        for i in 0..5 {
            cache.insert(ReplyKey(i), frame("xx"), 500, 0);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(ReplyKey(0), 0), None);
        assert_eq!(cache.get(ReplyKey(4), 0), Some(frame("xx")));
        // Bytes: a big reply needs older ones out to fit.
        let sized = |n: usize| Bytes::from(vec![b'y'; n * REPLY_OVERHEAD]);
        cache.insert(ReplyKey(9), sized(2), 500, 0);
        assert_eq!(cache.get(ReplyKey(2), 0), None);
        assert!(cache.get(ReplyKey(9), 0).is_some());
        // Larger than the whole budget: not kept, nothing evicted for it.
        cache.insert(ReplyKey(10), sized(10), 500, 0);
        assert_eq!(cache.get(ReplyKey(10), 0), None);
        assert!(cache.get(ReplyKey(9), 0).is_some());
    }

    #[test]
    fn reply_cache_replaces_a_key_without_losing_track_of_bytes() {
        let mut cache = ReplyCache::new(10, 1000);
        cache.insert(ReplyKey(1), frame("aaaa"), 500, 0);
        cache.insert(ReplyKey(1), frame("bbbbbb"), 500, 0);
        assert_eq!(cache.get(ReplyKey(1), 0), Some(frame("bbbbbb")));
        // Popping the first (stale) order entry must not drop the newer reply.
        cache.pop_oldest();
        assert_eq!(cache.get(ReplyKey(1), 0), Some(frame("bbbbbb")));
        assert_eq!(cache.bytes, 6 + REPLY_OVERHEAD);
    }
}
