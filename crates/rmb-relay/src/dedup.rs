//! The relay's memory of the envelopes it accepted (design D1a), so that a later copy is
//! dropped: receivers that do not de-duplicate (the original rmb-peer, the Go router, the
//! TypeScript client) would run a copied request twice.
//!
//! A signed envelope is remembered under its signature key (source twin, signature), a
//! keyed 64-bit hash (fixed size, and nobody without the per-process key can aim
//! collisions). The signature covers kind, source, destination, uid and timestamp, and
//! stays with the envelope when an attacker shifts bytes between its fields, so every
//! copy (a sender's retransmission, a replayed federation post, a shifted variant)
//! matches it. A request signed again with a fresh timestamp is *not* a copy: the sender
//! sends it again on purpose, and ours do that only toward receivers that de-duplicate
//! themselves (design D1c, docs/compatibility.md). An unsigned envelope falls back to its
//! message key (kind, source, destination, uid). Entries live until the envelope's
//! deadline; the memory is bounded by entries, and when full the entry closest to its
//! deadline makes room (counted: a copy of it would get through).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::rules::{self, HashKey};

/// The keys an envelope is remembered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenKeys {
    /// The message key; only computed for an unsigned envelope, the only one it
    /// recognises (a keyed hash per envelope is a tenth of a busy relay's CPU).
    pub message: Option<u64>,
    pub signature: Option<u64>,
}

impl SeenKeys {
    /// The keys of `env` (`rmb_core::rules`' de-duplication keys), hashed with `key`.
    pub fn of(key: &HashKey, env: &EnvelopeHeader) -> Self {
        let signature = rules::signature_key(key, env);
        SeenKeys {
            message: signature.is_none().then(|| rules::message_key(key, env)),
            signature,
        }
    }

    /// The key a copy is recognised by: the signature key when signed (see the module
    /// comment), else the message key.
    pub fn key(&self) -> u64 {
        self.signature.or(self.message).unwrap_or_default()
    }

    /// [`key`](Self::key), for callers that store keys as a list.
    pub fn iter(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.key())
    }
}

/// The keys of an accepted envelope and until when to remember them, carried with its
/// frame to a backend that remembers them in the same atomic step that stores the frame
/// (Redis): a crash between the two would otherwise leave a remembered envelope that was
/// never stored, and its re-sent copy would be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remember {
    pub keys: SeenKeys,
    pub until: u64,
}

/// Shards keep claims from different cores off one lock.
const SHARDS: usize = 16;

/// Remembered keys, bounded by entries.
pub struct SeenMemory {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    /// key → deadline (unix second).
    deadlines: HashMap<u64, u64, foldhash::fast::RandomState>,
    /// The keys by deadline second, soonest first; may hold stale entries (released
    /// keys), skipped when taken. Deadlines are whole seconds, so a full memory evicts
    /// from the soonest second's list in O(1): a binary heap of every key cost a
    /// cache-missing sift per envelope once full (a fifth of a busy relay's CPU).
    /// Deadlines lie within the relay's `max_lifetime` of now, so a shard holds at most
    /// that many lists (7 200 by default, under 1 MiB of list overhead per shard
    /// however the keys' deadlines are spread) besides its entries.
    by_deadline: BTreeMap<u64, Vec<u64>>,
    /// Entries in `by_deadline`, stale ones included.
    queued: usize,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not seen before: now remembered. `evicted` entries were forgotten to make room.
    New { evicted: usize },
    /// A copy of an envelope already accepted.
    Copy,
}

impl SeenMemory {
    /// A memory of at most `capacity` keys (one per envelope; 0 remembers nothing).
    pub fn new(capacity: usize) -> Self {
        SeenMemory {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard_of(key: u64) -> usize {
        (key % SHARDS as u64) as usize
    }

    /// Remembers `keys` until `deadline` unless one of them is already remembered (and
    /// not expired at `now`): the check and the insert are one step, so of two copies
    /// arriving at once exactly one is new.
    pub fn claim(&self, keys: &SeenKeys, deadline: u64, now: u64) -> Claim {
        if self.per_shard == 0 {
            // Capacity 0: copy-dropping is off (and the relay does not advertise it).
            return Claim::New { evicted: 0 };
        }
        let key = keys.key();
        let mut shard = self.shards[Self::shard_of(key)].lock();
        if shard.deadlines.get(&key).is_some_and(|d| *d > now) {
            return Claim::Copy;
        }
        let evicted = shard.insert(key, deadline, now, self.per_shard);
        Claim::New { evicted }
    }

    /// Forgets `keys` (the envelope was claimed, then not accepted after all).
    pub fn release(&self, keys: &SeenKeys) {
        let key = keys.key();
        self.shards[Self::shard_of(key)]
            .lock()
            .deadlines
            .remove(&key);
    }

    /// Drops expired entries.
    pub fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            shard.lock().expire(now);
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().deadlines.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Inserts `key`; returns how many live entries were evicted to stay within `cap`.
    fn insert(&mut self, key: u64, deadline: u64, now: u64, cap: usize) -> usize {
        self.expire(now);
        let mut evicted = 0;
        while self.deadlines.len() >= cap {
            match self.pop_soonest() {
                Some(_) => evicted += 1,
                None => break,
            }
        }
        self.deadlines.insert(key, deadline);
        self.by_deadline.entry(deadline).or_default().push(key);
        self.queued += 1;
        if self.queued > 2 * cap {
            // Released keys left stale entries behind: rebuild from the map.
            self.by_deadline.clear();
            for (k, d) in &self.deadlines {
                self.by_deadline.entry(*d).or_default().push(*k);
            }
            self.queued = self.deadlines.len();
        }
        evicted
    }

    /// Removes entries whose deadline is not after `now`.
    fn expire(&mut self, now: u64) {
        while let Some(entry) = self.by_deadline.first_entry() {
            if *entry.key() > now {
                break;
            }
            let (deadline, keys) = entry.remove_entry();
            self.queued -= keys.len();
            for key in keys {
                if self.deadlines.get(&key) == Some(&deadline) {
                    self.deadlines.remove(&key);
                }
            }
        }
    }

    /// Removes the live entry with the soonest deadline; stale entries are skipped.
    fn pop_soonest(&mut self) -> Option<u64> {
        while let Some(mut entry) = self.by_deadline.first_entry() {
            let deadline = *entry.key();
            let Some(key) = entry.get_mut().pop() else {
                entry.remove();
                continue;
            };
            self.queued -= 1;
            if entry.get().is_empty() {
                entry.remove();
            }
            if self.deadlines.get(&key) == Some(&deadline) {
                self.deadlines.remove(&key);
                return Some(key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(message: u64, signature: Option<u64>) -> SeenKeys {
        SeenKeys {
            message: Some(message),
            signature,
        }
    }

    #[test]
    fn a_signed_copy_matches_its_signature_until_the_deadline() {
        let seen = SeenMemory::new(100);
        assert_eq!(
            seen.claim(&keys(1, Some(2)), 50, 10),
            Claim::New { evicted: 0 }
        );
        assert_eq!(seen.claim(&keys(4, Some(2)), 50, 10), Claim::Copy);
        assert_eq!(
            seen.claim(&keys(1, Some(3)), 50, 10),
            Claim::New { evicted: 0 },
            "signed again (a deliberate re-send toward a de-duplicating receiver) is new"
        );
        assert_eq!(
            seen.claim(&keys(1, Some(2)), 90, 50),
            Claim::New { evicted: 0 },
            "past its deadline the entry is gone"
        );
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let seen = SeenMemory::new(0);
        seen.claim(&keys(1, Some(2)), 50, 10);
        assert!(matches!(
            seen.claim(&keys(1, Some(2)), 50, 10),
            Claim::New { .. }
        ));
        assert!(seen.is_empty());
    }

    #[test]
    fn an_unsigned_copy_matches_its_message_key() {
        let seen = SeenMemory::new(100);
        assert!(matches!(
            seen.claim(&keys(1, None), 50, 10),
            Claim::New { .. }
        ));
        assert_eq!(seen.claim(&keys(1, None), 50, 10), Claim::Copy);
    }

    #[test]
    fn released_keys_can_be_claimed_again() {
        let seen = SeenMemory::new(100);
        seen.claim(&keys(1, None), 50, 10);
        seen.release(&keys(1, None));
        assert!(matches!(
            seen.claim(&keys(1, None), 50, 10),
            Claim::New { .. }
        ));
    }

    #[test]
    fn bounded_by_entries_the_soonest_deadline_goes_first() {
        // One shard's worth: keys that all land in shard 0.
        let seen = SeenMemory::new(2 * SHARDS);
        let key = |n: u64| keys(n * SHARDS as u64, None);
        seen.claim(&key(1), 30, 0);
        seen.claim(&key(2), 20, 0);
        assert_eq!(seen.claim(&key(3), 40, 0), Claim::New { evicted: 1 });
        assert!(
            matches!(seen.claim(&key(2), 40, 0), Claim::New { .. }),
            "2 was evicted"
        );
        assert_eq!(seen.claim(&key(3), 40, 0), Claim::Copy);
        assert!(seen.len() <= 2 * SHARDS);
    }

    #[test]
    fn sweeping_and_releasing_keep_the_heap_bounded() {
        let seen = SeenMemory::new(SHARDS);
        for n in 0..1000u64 {
            let k = keys(n * SHARDS as u64, None);
            seen.claim(&k, 100, 0);
            seen.release(&k);
        }
        assert!(seen.shards[0].lock().queued <= 2);
        seen.claim(&keys(7, None), 10, 0);
        seen.sweep(10);
        assert!(seen.is_empty());
    }

    #[test]
    fn keys_tell_empty_sessions_from_none_and_catch_moved_signatures() {
        use rmb_core::proto::{Address, MessageKind, RequestHeader};
        let key = HashKey::random();
        let request = EnvelopeHeader {
            uid: bytes::Bytes::from_static(b"u"),
            source: Some(Address::twin(1)),
            destination: Some(Address::twin(2)),
            kind: Some(MessageKind::Request(RequestHeader::default())),
            signature: Some(bytes::Bytes::from_static(b"e-signature")),
            ..Default::default()
        };
        let mut empty = request.clone();
        empty.destination = Some(Address::session(2, ""));
        let mut shifted = request.clone();
        shifted.uid = bytes::Bytes::from_static(b"u2");
        let base = SeenKeys::of(&key, &request);
        let message = |env: &EnvelopeHeader| rules::message_key(&key, env);
        assert_ne!(message(&request), message(&empty));
        let moved = SeenKeys::of(&key, &shifted);
        assert_ne!(message(&request), message(&shifted));
        assert_eq!(base.signature, moved.signature);
        assert_eq!(base.message, None, "a signed envelope needs no message key");
        let seen = SeenMemory::new(100);
        assert!(matches!(seen.claim(&base, 50, 0), Claim::New { .. }));
        assert_eq!(seen.claim(&moved, 50, 0), Claim::Copy);
    }
}
