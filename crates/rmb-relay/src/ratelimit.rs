//! Per-twin rate limiting: at most `messages` envelopes and `bytes` bytes per window.
//! Fixed windows keep the hot path to one map lookup and two additions.

use dashmap::DashMap;

/// A limit per window; `None` fields are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub messages: Option<u64>,
    pub bytes: Option<u64>,
    pub window_secs: u64,
}

#[derive(Debug, Default)]
struct Window {
    index: u64,
    messages: u64,
    bytes: u64,
}

pub struct RateLimiter {
    limit: RateLimit,
    windows: DashMap<u32, Window>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit: RateLimit {
                window_secs: limit.window_secs.max(1),
                ..limit
            },
            windows: DashMap::new(),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.limit.messages.is_none() && self.limit.bytes.is_none()
    }

    /// Counts one envelope of `size` bytes from `twin` at `now`; false when it is over
    /// the limit (and then it is not counted).
    pub fn allow(&self, twin: u32, size: usize, now: u64) -> bool {
        if self.is_unlimited() {
            return true;
        }
        let index = now / self.limit.window_secs;
        let mut w = self.windows.entry(twin).or_default();
        if w.index != index {
            *w = Window {
                index,
                ..Window::default()
            };
        }
        let over_messages = self.limit.messages.is_some_and(|m| w.messages + 1 > m);
        let over_bytes = self.limit.bytes.is_some_and(|b| w.bytes + size as u64 > b);
        if over_messages || over_bytes {
            return false;
        }
        w.messages += 1;
        w.bytes += size as u64;
        true
    }

    /// Takes back one envelope of `size` bytes counted for `twin` at `now` (it turned
    /// out to be a copy, which is never charged); nothing if its window has passed.
    pub fn refund(&self, twin: u32, size: usize, now: u64) {
        if self.is_unlimited() {
            return;
        }
        let index = now / self.limit.window_secs;
        if let Some(mut w) = self.windows.get_mut(&twin) {
            if w.index == index {
                w.messages = w.messages.saturating_sub(1);
                w.bytes = w.bytes.saturating_sub(size as u64);
            }
        }
    }

    /// The unix second the window after the one holding `now` starts (saturating: a
    /// window past what `u64` holds never ends).
    pub fn next_window(&self, now: u64) -> u64 {
        (now / self.limit.window_secs)
            .saturating_add(1)
            .saturating_mul(self.limit.window_secs)
    }

    /// Forgets windows older than the current one (called periodically).
    pub fn sweep(&self, now: u64) {
        let index = now / self.limit.window_secs;
        self.windows.retain(|_, w| w.index >= index);
    }

    pub fn describe(&self) -> String {
        let m = self
            .limit
            .messages
            .map_or("unlimited".into(), |m| m.to_string());
        let b = self
            .limit
            .bytes
            .map_or("unlimited".into(), |b| b.to_string());
        format!("{m} messages and {b} bytes per {}s", self.limit.window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_messages_and_bytes_per_window() {
        let rl = RateLimiter::new(RateLimit {
            messages: Some(2),
            bytes: Some(100),
            window_secs: 10,
        });
        assert!(rl.allow(1, 10, 100));
        assert!(rl.allow(1, 10, 101));
        assert!(!rl.allow(1, 10, 102), "third message in the window");
        assert!(rl.allow(2, 10, 102), "other twins are not affected");
        assert!(rl.allow(1, 10, 110), "new window");
        assert!(!rl.allow(3, 101, 110), "too many bytes");
        assert!(rl.allow(3, 100, 110));
        rl.sweep(200);
        assert!(rl.windows.is_empty());
    }

    #[test]
    fn the_next_window_starts_at_a_multiple_of_the_window() {
        let rl = RateLimiter::new(RateLimit {
            messages: Some(1),
            bytes: None,
            window_secs: 60,
        });
        assert_eq!(rl.next_window(0), 60);
        assert_eq!(rl.next_window(119), 120);
        assert_eq!(rl.next_window(120), 180);
        assert_eq!(rl.next_window(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn unlimited_allows_everything() {
        let rl = RateLimiter::new(RateLimit {
            messages: None,
            bytes: None,
            window_secs: 1,
        });
        assert!((0..1000).all(|i| rl.allow(1, 1 << 20, i)));
    }
}
