//! End-to-end retransmission, without I/O.
//!
//! A relay that confirmed an envelope can still lose it (an in-memory relay that stops
//! before writing it on, a federation hop that fails after accepting it). Only the two
//! ends can close that gap, so they do:
//! - the sender keeps each request it sent in [`Outstanding`] and sends the same bytes
//!   again, at growing intervals, until a reply (or a relay error) for it arrives or it
//!   expires;
//! - the receiver already drops a copy of a request it has seen (de-duplication by
//!   source and uid). So that a copy of a request whose *reply* was lost still gets an
//!   answer, the receiver keeps the replies it sent in a [`ReplyCache`] and sends the
//!   cached reply again for such a copy. A handler therefore runs once per request
//!   (while the receiver stays up), and the caller gets its answer.
//!
//! Times are passed in (`now_ms` monotonic milliseconds, `now` unix seconds), so all of
//! this is tested without clocks.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

/// Requests sent and not yet answered, with when to send each again.
#[derive(Debug)]
pub struct Outstanding {
    /// By uid, then destination twin (one uid goes to several twins in a
    /// multi-destination request), so answers and refusals find theirs directly.
    by_uid: HashMap<String, Vec<(u32, Entry)>>,
    first_interval_ms: u64,
}

#[derive(Debug)]
struct Entry {
    frame: Bytes,
    /// Unix seconds after which the request has expired and is not worth re-sending.
    deadline: u64,
    next_ms: u64,
    interval_ms: u64,
}

impl Outstanding {
    /// The first copy goes `first_interval` after the original; each further one waits
    /// twice as long as the one before.
    pub fn new(first_interval: Duration) -> Self {
        Outstanding {
            by_uid: HashMap::new(),
            first_interval_ms: (first_interval.as_millis() as u64).max(1),
        }
    }

    /// Remembers a request sent to `twin` (replacing one with the same uid and twin).
    pub fn track(&mut self, uid: String, twin: u32, frame: Bytes, deadline: u64, now_ms: u64) {
        let interval_ms = self.first_interval_ms;
        let entry = Entry {
            frame,
            deadline,
            next_ms: now_ms + interval_ms,
            interval_ms,
        };
        let twins = self.by_uid.entry(uid).or_default();
        twins.retain(|(t, _)| *t != twin);
        twins.push((twin, entry));
    }

    /// `twin` answered request `uid` (or the caller gave up on it): stop re-sending it.
    pub fn answered(&mut self, uid: &str, twin: u32) {
        if let Some(twins) = self.by_uid.get_mut(uid) {
            twins.retain(|(t, _)| *t != twin);
            if twins.is_empty() {
                self.by_uid.remove(uid);
            }
        }
    }

    /// A relay could not route request `uid`: re-sending the same bytes would fail the
    /// same way, so stop for every destination.
    pub fn refused(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    /// The frames due again at `now_ms` with their deadlines, each rescheduled at twice
    /// its interval; expired requests are forgotten.
    pub fn due(&mut self, now_ms: u64, now: u64) -> Vec<(Bytes, u64)> {
        let mut frames = Vec::new();
        self.by_uid.retain(|_, twins| {
            twins.retain(|(_, e)| e.deadline > now);
            for (_, entry) in twins.iter_mut() {
                if entry.next_ms <= now_ms {
                    frames.push((entry.frame.clone(), entry.deadline));
                    entry.interval_ms = entry.interval_ms.saturating_mul(2);
                    entry.next_ms = now_ms + entry.interval_ms;
                }
            }
            !twins.is_empty()
        });
        frames
    }

    /// Requests (destinations) still waiting for an answer.
    pub fn len(&self) -> usize {
        self.by_uid.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

/// Replies recently sent, by `"<requester address>|<uid>"`, each kept until its
/// deadline, within a count and a byte budget (the oldest go first).
#[derive(Debug)]
pub struct ReplyCache {
    /// Reply frames (with their deadlines) and the insertion number that owns them.
    replies: HashMap<String, (u64, u64, Bytes)>,
    /// (deadline, key, insertion number), oldest first.
    order: VecDeque<(u64, String, u64)>,
    inserted: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl ReplyCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ReplyCache {
            replies: HashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// The cache key of the reply to request `uid` from `requester` (an address as text).
    pub fn key(requester: impl std::fmt::Display, uid: &str) -> String {
        format!("{requester}|{uid}")
    }

    /// Keeps `frame` until `deadline` (unix s). A reply bigger than the whole budget is
    /// not kept.
    pub fn insert(&mut self, key: String, frame: Bytes, deadline: u64, now: u64) {
        self.expire(now);
        if frame.len() > self.max_bytes {
            return;
        }
        while self.order.len() >= self.max_entries || self.bytes + frame.len() > self.max_bytes {
            if !self.pop_oldest() {
                break;
            }
        }
        self.inserted += 1;
        self.bytes += frame.len();
        let entry = (self.inserted, deadline, frame);
        if let Some((_, _, old)) = self.replies.insert(key.clone(), entry) {
            self.bytes -= old.len();
        }
        self.order.push_back((deadline, key, self.inserted));
    }

    /// The reply kept under `key` and its deadline, if any.
    pub fn get(&mut self, key: &str, now: u64) -> Option<(Bytes, u64)> {
        self.expire(now);
        self.replies
            .get(key)
            .map(|(_, deadline, frame)| (frame.clone(), *deadline))
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
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
                self.bytes -= frame.len();
            }
        }
        true
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

    fn cached(cache: &mut ReplyCache, key: &str, now: u64) -> Option<Bytes> {
        cache.get(key, now).map(|(frame, _)| frame)
    }

    #[test]
    fn requests_are_resent_at_doubling_intervals_until_answered() {
        let mut out = Outstanding::new(Duration::from_millis(100));
        out.track("u1".into(), 7, frame("a"), 1000, 0);
        out.track("u2".into(), 8, frame("b"), 1000, 50);
        assert!(frames(out.due(99, 900)).is_empty());
        assert_eq!(frames(out.due(100, 900)), vec![frame("a")]);
        assert_eq!(frames(out.due(150, 900)), vec![frame("b")]);
        // u1's next copy waits 200 ms, then 400 ms.
        assert!(frames(out.due(299, 900)).is_empty());
        assert_eq!(frames(out.due(300, 900)), vec![frame("a")]);
        out.answered("u2", 8);
        assert!(frames(out.due(699, 900)).is_empty());
        assert_eq!(frames(out.due(700, 900)), vec![frame("a")]);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn expired_and_refused_requests_are_forgotten() {
        let mut out = Outstanding::new(Duration::from_millis(10));
        out.track("old".into(), 1, frame("a"), 100, 0);
        out.track("multi".into(), 2, frame("b"), 500, 0);
        out.track("multi".into(), 3, frame("c"), 500, 0);
        // An answer from another twin does not settle this one.
        out.answered("old", 2);
        assert_eq!(out.len(), 3);
        assert_eq!(
            frames(out.due(10, 100)).len(),
            2,
            "the expired request is not re-sent"
        );
        out.refused("multi");
        assert!(out.is_empty());
    }

    #[test]
    fn reply_cache_keeps_replies_until_their_deadline() {
        let mut cache = ReplyCache::new(10, 1000);
        let key = ReplyCache::key("5", "u1");
        cache.insert(key.clone(), frame("reply"), 200, 100);
        assert_eq!(cache.get(&key, 200), Some((frame("reply"), 200)));
        assert_eq!(cache.get(&ReplyCache::key("6", "u1"), 150), None);
        assert_eq!(cached(&mut cache, &key, 201), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn reply_cache_stays_within_its_budgets() {
        let mut cache = ReplyCache::new(3, 10);
        for i in 0..5 {
            cache.insert(format!("k{i}"), frame("xx"), 500, 0);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cached(&mut cache, "k0", 0), None);
        assert_eq!(cached(&mut cache, "k4", 0), Some(frame("xx")));
        // Bytes: 3 × 2 kept; a 6-byte reply needs the oldest out to fit in 10.
        cache.insert("big".into(), frame("yyyyyy"), 500, 0);
        assert_eq!(cached(&mut cache, "k2", 0), None);
        assert_eq!(cached(&mut cache, "k3", 0), Some(frame("xx")));
        assert_eq!(cached(&mut cache, "big", 0), Some(frame("yyyyyy")));
        // Larger than the whole budget: not kept, nothing evicted for it.
        cache.insert("huge".into(), frame("zzzzzzzzzzzz"), 500, 0);
        assert_eq!(cached(&mut cache, "huge", 0), None);
        assert_eq!(cached(&mut cache, "big", 0), Some(frame("yyyyyy")));
    }

    #[test]
    fn reply_cache_replaces_a_key_without_losing_track_of_bytes() {
        let mut cache = ReplyCache::new(10, 10);
        cache.insert("k".into(), frame("aaaa"), 500, 0);
        cache.insert("k".into(), frame("bbbbbb"), 500, 0);
        assert_eq!(cached(&mut cache, "k", 0), Some(frame("bbbbbb")));
        // Popping the first (stale) order entry must not drop the newer reply.
        cache.insert("j".into(), frame("cccc"), 500, 0);
        assert_eq!(cached(&mut cache, "k", 0), Some(frame("bbbbbb")));
        assert_eq!(cache.len(), 2);
    }
}
