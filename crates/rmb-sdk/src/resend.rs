//! End-to-end retransmission, without I/O.
//!
//! A relay that confirmed an envelope can still lose it (an in-memory relay that stops
//! before writing it on, a federation hop that fails after accepting it). Only the two
//! ends can close that gap, but a copy reaching a receiver that does not de-duplicate
//! (the original rmb-peer, the Go router, the TypeScript client) runs its handler
//! again. So (docs/compatibility.md, "Not running a request twice"):
//! - the sender keeps each request it sent in [`Outstanding`] and, where the
//!   [`Resend`] policy allows, sends the same bytes again at growing intervals until a
//!   reply (or a relay error) arrives or it expires; by default only toward receivers
//!   known to drop copies ([`Deduplicators`]: they said so in the tags of a reply);
//! - our receivers drop a copy of a request they have seen and answer it with the reply
//!   they kept ([`ReplyCache`]), so a copy of a request whose reply was lost still gets
//!   an answer, and the handler runs once.
//!
//! Times are passed in (`now_ms` monotonic milliseconds, `now` unix seconds), so all of
//! this is tested without clocks.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use bytes::Bytes;
use rmb_core::Address;

/// When a request still without a reply is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resend {
    /// Never: a request a relay lost is lost (the call times out).
    Off,
    /// Only toward receivers known to drop copies: those whose replies carried the
    /// `dedup` tag within the last hour. A receiver never heard from is never sent a
    /// copy, so the first request to it is not recovered if a relay loses it.
    #[default]
    KnownReceivers,
    /// Toward every receiver. Only for deployments whose receivers all de-duplicate
    /// (ours do; the original rmb-peer, the Go router and the TypeScript client do not,
    /// and run every copy).
    Always,
}

impl Resend {
    /// Whether a copy of a request may go to a receiver that is (or is not) known to
    /// drop copies.
    pub fn allows(self, known_deduplicator: bool) -> bool {
        match self {
            Resend::Off => false,
            Resend::KnownReceivers => known_deduplicator,
            Resend::Always => true,
        }
    }
}

/// Receivers known to drop copies of requests, by address (twin and exact session):
/// learned from a verified reply to one of our requests whose tags hold `dedup`, and
/// forgotten `ttl` after the last such reply. Bounded: when full of live entries,
/// nothing new is learned (not knowing only means not re-sending).
#[derive(Debug)]
pub(crate) struct Deduplicators {
    /// Until when (monotonic ms) each address is believed, by a hash of the address.
    until: HashMap<u64, u64>,
    hasher: RandomState,
    ttl_ms: u64,
    capacity: usize,
}

impl Deduplicators {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Deduplicators {
            until: HashMap::new(),
            hasher: RandomState::new(),
            ttl_ms: ttl.as_millis().try_into().unwrap_or(u64::MAX),
            capacity: capacity.max(1),
        }
    }

    fn key(&self, address: &Address) -> u64 {
        // `None` and `Some("")` are different sessions (design D2).
        self.hasher
            .hash_one((address.twin, address.connection.as_deref()))
    }

    /// `address` said (in a reply to us) that it drops copies.
    pub(crate) fn learned(&mut self, address: &Address, now_ms: u64) {
        let key = self.key(address);
        if !self.until.contains_key(&key) && self.until.len() >= self.capacity {
            self.until.retain(|_, until| *until > now_ms);
            if self.until.len() >= self.capacity {
                return;
            }
        }
        self.until.insert(key, now_ms.saturating_add(self.ttl_ms));
    }

    /// Whether `address` is known to drop copies.
    pub(crate) fn knows(&self, address: &Address, now_ms: u64) -> bool {
        self.until
            .get(&self.key(address))
            .is_some_and(|until| *until > now_ms)
    }
}

/// Requests sent and not yet answered, with when to send each again. Bounded in bytes
/// of frames kept: beyond that a request is not kept (and so never sent again).
#[derive(Debug)]
pub(crate) struct Outstanding {
    /// By uid, then destination twin (one uid goes to several twins in a
    /// multi-destination request), so answers and refusals find theirs directly.
    by_uid: HashMap<String, Vec<(u32, Entry)>>,
    first_interval_ms: u64,
    bytes: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Entry {
    destination: Address,
    frame: Bytes,
    /// Unix seconds after which the request has expired and is not worth re-sending.
    deadline: u64,
    next_ms: u64,
    interval_ms: u64,
}

impl Entry {
    /// What an entry costs beyond its frame (uid, address, bookkeeping), roughly.
    fn size(&self, uid: &str) -> usize {
        self.frame.len()
            + uid.len()
            + self.destination.connection.as_ref().map_or(0, String::len)
            + 96
    }
}

impl Outstanding {
    /// The first copy goes `first_interval` after the original; each further one waits
    /// twice as long as the one before. At most `max_bytes` of requests are kept.
    pub(crate) fn new(first_interval: Duration, max_bytes: usize) -> Self {
        Outstanding {
            by_uid: HashMap::new(),
            first_interval_ms: (first_interval.as_millis() as u64).max(1),
            bytes: 0,
            max_bytes,
        }
    }

    /// Remembers a request sent to `destination` (replacing one with the same uid and
    /// twin); false if it did not fit.
    pub(crate) fn track(
        &mut self,
        uid: String,
        destination: Address,
        frame: Bytes,
        deadline: u64,
        now_ms: u64,
    ) -> bool {
        let twin = destination.twin;
        self.answered(&uid, twin);
        let interval_ms = self.first_interval_ms;
        let entry = Entry {
            destination,
            frame,
            deadline,
            next_ms: now_ms.saturating_add(interval_ms),
            interval_ms,
        };
        let size = entry.size(&uid);
        if self.bytes.saturating_add(size) > self.max_bytes {
            return false;
        }
        self.bytes += size;
        self.by_uid.entry(uid).or_default().push((twin, entry));
        true
    }

    /// `twin` answered request `uid` (or the caller gave up on it): stop re-sending it.
    /// True if it was kept.
    pub(crate) fn answered(&mut self, uid: &str, twin: u32) -> bool {
        let Some(twins) = self.by_uid.get_mut(uid) else {
            return false;
        };
        let Some(i) = twins.iter().position(|(t, _)| *t == twin) else {
            return false;
        };
        let (_, entry) = twins.swap_remove(i);
        self.bytes -= entry.size(uid);
        if twins.is_empty() {
            self.by_uid.remove(uid);
        }
        true
    }

    /// A relay could not route request `uid`: re-sending the same bytes would fail the
    /// same way, so stop for every destination.
    pub(crate) fn refused(&mut self, uid: &str) {
        if let Some(twins) = self.by_uid.remove(uid) {
            for (_, entry) in twins {
                self.bytes -= entry.size(uid);
            }
        }
    }

    /// The frames due again at `now_ms` whose destination `may_resend` allows, with
    /// their deadlines; every due entry is rescheduled at twice its interval (so one
    /// not allowed now may go later, once its receiver is known); expired requests are
    /// forgotten.
    pub(crate) fn due(
        &mut self,
        now_ms: u64,
        now: u64,
        may_resend: impl Fn(&Address) -> bool,
    ) -> Vec<(Bytes, u64)> {
        let mut frames = Vec::new();
        let mut freed = 0;
        self.by_uid.retain(|uid, twins| {
            twins.retain(|(_, e)| {
                let live = e.deadline > now;
                if !live {
                    freed += e.size(uid);
                }
                live
            });
            for (_, entry) in twins.iter_mut() {
                if entry.next_ms <= now_ms {
                    if may_resend(&entry.destination) {
                        frames.push((entry.frame.clone(), entry.deadline));
                    }
                    entry.interval_ms = entry.interval_ms.saturating_mul(2);
                    entry.next_ms = now_ms.saturating_add(entry.interval_ms);
                }
            }
            !twins.is_empty()
        });
        self.bytes -= freed;
        frames
    }
}

/// What the tests look at.
#[cfg(test)]
impl Outstanding {
    /// Requests (destinations) still waiting for an answer.
    fn len(&self) -> usize {
        self.by_uid.values().map(Vec::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// Bytes of requests kept.
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn frames(due: Vec<(Bytes, u64)>) -> Vec<Bytes> {
        due.into_iter().map(|(frame, _)| frame).collect()
    }

    fn all(_: &Address) -> bool {
        true
    }

    #[test]
    fn requests_are_resent_at_doubling_intervals_until_answered() {
        let mut out = Outstanding::new(Duration::from_millis(100), 1 << 20);
        out.track("u1".into(), Address::twin(7), frame("a"), 1000, 0);
        out.track("u2".into(), Address::twin(8), frame("b"), 1000, 50);
        assert!(frames(out.due(99, 900, all)).is_empty());
        assert_eq!(frames(out.due(100, 900, all)), vec![frame("a")]);
        assert_eq!(frames(out.due(150, 900, all)), vec![frame("b")]);
        // u1's next copy waits 200 ms, then 400 ms.
        assert!(frames(out.due(299, 900, all)).is_empty());
        assert_eq!(frames(out.due(300, 900, all)), vec![frame("a")]);
        assert!(out.answered("u2", 8));
        assert!(!out.answered("u2", 8));
        assert!(frames(out.due(699, 900, all)).is_empty());
        assert_eq!(frames(out.due(700, 900, all)), vec![frame("a")]);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn only_receivers_the_policy_allows_get_copies() {
        let mut out = Outstanding::new(Duration::from_millis(10), 1 << 20);
        out.track("u".into(), Address::twin(7), frame("a"), 1000, 0);
        let known = |a: &Address| a.twin == 8;
        assert!(frames(out.due(10, 900, known)).is_empty());
        // Still kept, and rescheduled: once the receiver is known, copies go.
        assert_eq!(out.len(), 1);
        assert!(frames(out.due(29, 900, all)).is_empty());
        assert_eq!(frames(out.due(30, 900, all)), vec![frame("a")]);
    }

    #[test]
    fn expired_and_refused_requests_are_forgotten() {
        let mut out = Outstanding::new(Duration::from_millis(10), 1 << 20);
        out.track("old".into(), Address::twin(1), frame("a"), 100, 0);
        out.track("multi".into(), Address::twin(2), frame("b"), 500, 0);
        out.track("multi".into(), Address::twin(3), frame("c"), 500, 0);
        // An answer from another twin does not settle this one.
        assert!(!out.answered("old", 2));
        assert_eq!(out.len(), 3);
        assert_eq!(
            frames(out.due(10, 100, all)).len(),
            2,
            "the expired request is not re-sent"
        );
        out.refused("multi");
        assert!(out.is_empty());
        assert_eq!(out.bytes(), 0, "every byte kept is given back");
    }

    #[test]
    fn outstanding_requests_are_capped_by_bytes() {
        let one = Entry {
            destination: Address::twin(1),
            frame: frame("aaaa"),
            deadline: 0,
            next_ms: 0,
            interval_ms: 0,
        }
        .size("u0");
        let mut out = Outstanding::new(Duration::from_millis(10), 2 * one);
        assert!(out.track("u0".into(), Address::twin(1), frame("aaaa"), 500, 0));
        assert!(out.track("u1".into(), Address::twin(1), frame("aaaa"), 500, 0));
        assert!(!out.track("u2".into(), Address::twin(1), frame("aaaa"), 500, 0));
        assert_eq!(out.len(), 2);
        // Replacing an entry frees its bytes first.
        assert!(out.track("u1".into(), Address::twin(1), frame("aaaa"), 500, 0));
        assert!(out.answered("u0", 1));
        assert!(out.track("u2".into(), Address::twin(1), frame("aaaa"), 500, 0));
    }

    #[test]
    fn the_policy_decides_who_gets_copies() {
        assert!(!Resend::Off.allows(true));
        assert!(Resend::KnownReceivers.allows(true));
        assert!(!Resend::KnownReceivers.allows(false));
        assert!(Resend::Always.allows(false));
        assert_eq!(Resend::default(), Resend::KnownReceivers);
    }

    #[test]
    fn deduplicators_are_learned_per_exact_address_and_forgotten() {
        let mut known = Deduplicators::new(Duration::from_millis(1000), 2);
        let a = Address::twin(5);
        let empty_session = Address::session(5, "");
        known.learned(&a, 0);
        assert!(known.knows(&a, 999));
        assert!(
            !known.knows(&empty_session, 10),
            "session \"\" is another address"
        );
        assert!(!known.knows(&Address::twin(6), 10));
        assert!(!known.knows(&a, 1000), "forgotten after the ttl");
        // Refreshed by another reply.
        known.learned(&a, 900);
        assert!(known.knows(&a, 1800));
        // Full of live entries: nothing new is learned; expired ones make room.
        known.learned(&empty_session, 1000);
        known.learned(&Address::twin(7), 1000);
        assert!(!known.knows(&Address::twin(7), 1000));
        known.learned(&Address::twin(7), 2500);
        assert!(known.knows(&Address::twin(7), 2500));
    }
}
