//! A map whose entries expire, bounded by entries and by bytes: what the peer keeps in
//! memory about requests (their backlogs, the schema of requests it handed to
//! services) when part of each entry is chosen by someone else.

use std::collections::HashMap;

use parking_lot::Mutex;

/// How often expired entries are dropped, in seconds.
const SWEEP_EVERY_SECS: u64 = 5;

/// Entries expire at a unix second; `now` is always passed in.
pub struct TtlMap<V> {
    inner: Mutex<Inner<V>>,
    max_entries: usize,
    max_bytes: usize,
}

struct Inner<V> {
    map: HashMap<String, Entry<V>>,
    /// Sum of the sizes given for the entries in `map`.
    bytes: usize,
    /// Unix second of the last sweep.
    swept: u64,
}

struct Entry<V> {
    value: V,
    deadline: u64,
    size: usize,
}

impl<V: Clone> TtlMap<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        TtlMap {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                swept: 0,
            }),
            max_entries,
            max_bytes,
        }
    }

    /// Keeps `value` until `deadline`, counting `size` bytes for it (its key included
    /// by the map). False if the map is full even after dropping what has expired: the
    /// caller goes without the memory (the peer then reads Redis instead).
    pub fn insert(&self, key: String, value: V, deadline: u64, size: usize, now: u64) -> bool {
        let size = size.saturating_add(key.len());
        let mut inner = self.inner.lock();
        // Replacing an entry frees what it held.
        let full = |inner: &Inner<V>| {
            let old = inner.map.get(&key).map(|e| e.size);
            (old.is_none() && inner.map.len() >= self.max_entries)
                || (inner.bytes - old.unwrap_or(0)).saturating_add(size) > self.max_bytes
        };
        // Sweeping every few seconds keeps the map near (rate × life) entries instead
        // of letting it grow to the cap before anything is freed.
        if full(&inner) || now >= inner.swept.saturating_add(SWEEP_EVERY_SECS) {
            inner.sweep(now);
            if full(&inner) {
                return false;
            }
        }
        if let Some(old) = inner.map.insert(
            key,
            Entry {
                value,
                deadline,
                size,
            },
        ) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        true
    }

    /// The live value under `key`.
    pub fn get(&self, key: &str, now: u64) -> Option<V> {
        let inner = self.inner.lock();
        let entry = inner.map.get(key)?;
        (entry.deadline > now).then(|| entry.value.clone())
    }

    pub fn remove(&self, key: &str) -> Option<V> {
        let mut inner = self.inner.lock();
        let entry = inner.map.remove(key)?;
        inner.bytes -= entry.size;
        Some(entry.value)
    }

    /// Entries and bytes held now (expired ones included until the next sweep).
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.map.len(), inner.bytes)
    }
}

impl<V> Inner<V> {
    fn sweep(&mut self, now: u64) {
        let mut freed = 0;
        self.map.retain(|_, e| {
            let live = e.deadline > now;
            if !live {
                freed += e.size;
            }
            live
        });
        self.bytes -= freed;
        self.swept = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_go_without_waiting_for_the_map_to_fill() {
        let map = TtlMap::new(100, 1 << 20);
        let t = 1_000;
        for i in 0..10 {
            assert!(map.insert(format!("old-{i}"), i, t + 1, 10, t));
        }
        map.insert("live".into(), 99, t + 60, 10, t);
        assert_eq!(
            map.get("old-3", t + 1),
            None,
            "expired entries are never served"
        );
        assert_eq!(map.usage().0, 11, "no sweep before its time");
        map.insert("new".into(), 100, t + 60, 10, t + SWEEP_EVERY_SECS);
        assert_eq!(map.usage().0, 2);
        assert_eq!(map.get("live", t + 2), Some(99));
    }

    #[test]
    fn bytes_are_capped_as_well_as_entries() {
        let map = TtlMap::new(1_000, 100);
        assert!(map.insert("a".into(), (), 50, 60, 0));
        assert!(!map.insert("b".into(), (), 50, 60, 0), "over the byte cap");
        assert_eq!(map.usage(), (1, 61));
        assert_eq!(map.remove("a"), Some(()));
        assert_eq!(map.usage(), (0, 0));
        assert!(map.insert("b".into(), (), 50, 60, 0));
        // Full of live entries, then they expire and make room.
        assert!(!map.insert("c".into(), (), 90, 60, 10));
        assert!(map.insert("c".into(), (), 90, 60, 50));
        let counted = TtlMap::new(2, usize::MAX);
        assert!(counted.insert("x".into(), 1, 9, 0, 0));
        assert!(counted.insert("y".into(), 2, 9, 0, 0));
        assert!(
            !counted.insert("z".into(), 3, 9, 0, 0),
            "over the entry cap"
        );
        assert!(counted.insert("x".into(), 4, 9, 0, 0), "a replacement fits");
        assert_eq!(counted.get("x", 0), Some(4));
    }
}
