//! Ranking a twin's relays for federation: lowest recent failure rate first, ties in
//! random order (so load spreads and one bad relay is not retried first forever).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::seq::SliceRandom;

/// Outcomes remembered per relay; older ones fall out of the window anyway.
const MAX_EVENTS: usize = 256;

pub struct Ranker {
    window: Duration,
    /// Relays remembered at most: twins choose relay names freely.
    max_relays: usize,
    events: Mutex<HashMap<String, VecDeque<(Instant, bool)>>>,
}

impl Ranker {
    pub fn new(window: Duration, max_relays: usize) -> Self {
        Ranker {
            window,
            max_relays: max_relays.max(1),
            events: Mutex::default(),
        }
    }

    /// Records one attempt against `relay`. A relay not seen before takes the place of
    /// the one heard from least recently when the ranker is full (forgetting a relay
    /// only makes it rank as new).
    pub fn record(&self, relay: &str, success: bool, at: Instant) {
        let mut events = self.events.lock();
        if !events.contains_key(relay) && events.len() >= self.max_relays {
            let stalest = events
                .iter()
                .min_by_key(|(_, q)| q.back().map(|(t, _)| *t))
                .map(|(name, _)| name.clone());
            if let Some(name) = stalest {
                events.remove(&name);
            }
        }
        let q = events.entry(relay.to_string()).or_default();
        q.push_back((at, success));
        if q.len() > MAX_EVENTS {
            q.pop_front();
        }
    }

    /// Failures / attempts within the window; 0 for a relay with no recent attempts.
    pub fn failure_rate(&self, relay: &str, now: Instant) -> f64 {
        let mut events = self.events.lock();
        let Some(q) = events.get_mut(relay) else {
            return 0.0;
        };
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            q.pop_front();
        }
        if q.is_empty() {
            events.remove(relay);
            return 0.0;
        }
        q.iter().filter(|(_, ok)| !ok).count() as f64 / q.len() as f64
    }

    /// `relays` best first.
    pub fn rank(&self, relays: &[String], now: Instant) -> Vec<String> {
        let mut ranked: Vec<(f64, String)> = relays
            .iter()
            .map(|r| (self.failure_rate(r, now), r.clone()))
            .collect();
        ranked.shuffle(&mut rand::thread_rng());
        // Stable sort keeps the random order among equal rates.
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        ranked.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_relays_rank_last_and_recover_after_the_window() {
        let ranker = Ranker::new(Duration::from_secs(60), 64);
        let t0 = Instant::now();
        ranker.record("bad", false, t0);
        ranker.record("ok", true, t0);
        let relays = vec!["bad".to_string(), "ok".to_string(), "new".to_string()];
        for _ in 0..20 {
            assert_eq!(ranker.rank(&relays, t0).last().unwrap(), "bad");
        }
        assert_eq!(ranker.failure_rate("bad", t0), 1.0);
        assert_eq!(
            ranker.failure_rate("bad", t0 + Duration::from_secs(61)),
            0.0
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_relays_the_stalest_going_first() {
        let ranker = Ranker::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        ranker.record("a", false, t0);
        ranker.record("b", false, t0 + Duration::from_secs(1));
        ranker.record("c", false, t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(ranker.events.lock().len(), 2);
        assert_eq!(ranker.failure_rate("a", now), 0.0, "a was forgotten");
        assert_eq!(ranker.failure_rate("b", now), 1.0);
        assert_eq!(ranker.failure_rate("c", now), 1.0);
    }

    #[test]
    fn ties_are_shuffled() {
        let ranker = Ranker::new(Duration::from_secs(60), 64);
        let relays: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
        let now = Instant::now();
        let firsts: std::collections::HashSet<String> = (0..100)
            .map(|_| ranker.rank(&relays, now)[0].clone())
            .collect();
        assert!(firsts.len() > 1, "ties always ranked in the same order");
    }
}
