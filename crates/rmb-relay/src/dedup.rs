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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use parking_lot::Mutex;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::rules::{self, HashKey};

/// The keys an envelope is remembered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenKeys {
    pub message: u64,
    pub signature: Option<u64>,
}

impl SeenKeys {
    /// The keys of `env` (`rmb_core::rules`' two de-duplication keys), hashed with `key`.
    pub fn of(key: &HashKey, env: &EnvelopeHeader) -> Self {
        SeenKeys {
            message: rules::message_key(key, env),
            signature: rules::signature_key(key, env),
        }
    }

    /// The keys a copy is recognised by: the signature key when signed (see the module
    /// comment), else the message key.
    fn iter(&self) -> impl Iterator<Item = u64> {
        let unsigned = self.signature.is_none().then_some(self.message);
        self.signature.into_iter().chain(unsigned)
    }
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
    /// Soonest deadline first; may hold stale entries (released keys), skipped when
    /// popped.
    by_deadline: BinaryHeap<Reverse<(u64, u64)>>,
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
        // Both shards are locked in index order, so concurrent claims cannot deadlock.
        let mut indices: Vec<usize> = keys.iter().map(Self::shard_of).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards: Vec<_> = indices.iter().map(|i| self.shards[*i].lock()).collect();
        let shard_for = |key: u64| indices.iter().position(|i| *i == Self::shard_of(key));
        for key in keys.iter() {
            let Some(slot) = shard_for(key) else { continue };
            let shard = &mut guards[slot];
            if shard.deadlines.get(&key).is_some_and(|d| *d > now) {
                return Claim::Copy;
            }
        }
        let mut evicted = 0;
        for key in keys.iter() {
            let Some(slot) = shard_for(key) else { continue };
            evicted += guards[slot].insert(key, deadline, now, self.per_shard);
        }
        Claim::New { evicted }
    }

    /// Forgets `keys` (the envelope was claimed, then not accepted after all).
    pub fn release(&self, keys: &SeenKeys) {
        for key in keys.iter() {
            self.shards[Self::shard_of(key)]
                .lock()
                .deadlines
                .remove(&key);
        }
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
        self.by_deadline.push(Reverse((deadline, key)));
        if self.by_deadline.len() > 2 * cap {
            // Released keys left stale heap entries behind: rebuild from the map.
            self.by_deadline = self
                .deadlines
                .iter()
                .map(|(k, d)| Reverse((*d, *k)))
                .collect();
        }
        evicted
    }

    /// Removes entries whose deadline is not after `now`.
    fn expire(&mut self, now: u64) {
        while self
            .by_deadline
            .peek()
            .is_some_and(|Reverse((deadline, _))| *deadline <= now)
        {
            self.pop_soonest();
        }
    }

    /// Removes the live entry with the soonest deadline; stale heap entries are skipped.
    fn pop_soonest(&mut self) -> Option<u64> {
        while let Some(Reverse((deadline, key))) = self.by_deadline.pop() {
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
        SeenKeys { message, signature }
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
        assert!(seen.shards[0].lock().by_deadline.len() <= 2);
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
        assert_ne!(base.message, SeenKeys::of(&key, &empty).message);
        let moved = SeenKeys::of(&key, &shifted);
        assert_ne!(base.message, moved.message);
        assert_eq!(base.signature, moved.signature);
        let seen = SeenMemory::new(100);
        assert!(matches!(seen.claim(&base, 50, 0), Claim::New { .. }));
        assert_eq!(seen.claim(&moved, 50, 0), Claim::Copy);
    }
}
