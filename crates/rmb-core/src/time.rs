//! Envelope time rules (§2.2). Functions take `now` explicitly so they are
//! deterministic and testable; [`now`] reads the system clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Default life of a request whose `exp` is 0, in seconds (§4).
pub const DEFAULT_TTL: u64 = 300;
/// Longest life a peer accepts for a request or response, in seconds (§4).
pub const MAX_TTL: u64 = 1800;

/// Current unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds an envelope stamped at `timestamp` with `expiration` still has to live at
/// `now`; `None` once it has expired (ttl ≤ 0).
pub fn ttl(timestamp: u64, expiration: u64, now: u64) -> Option<u64> {
    let deadline = timestamp.saturating_add(expiration);
    deadline.checked_sub(now).filter(|left| *left > 0)
}

/// Stamping before signing: the timestamp becomes `now` while the deadline stays put.
/// A zero or future timestamp is reset to now with `expiration` unchanged. Returns the
/// new `(timestamp, expiration)`.
pub fn stamp(timestamp: u64, expiration: u64, now: u64) -> (u64, u64) {
    if timestamp == 0 || timestamp > now {
        (now, expiration)
    } else {
        (now, expiration.saturating_sub(now - timestamp))
    }
}

/// The ttl the peer uses for an application's `exp`: 0 means [`DEFAULT_TTL`], anything
/// above [`MAX_TTL`] is capped.
pub fn effective_ttl(exp: u64) -> u64 {
    match exp {
        0 => DEFAULT_TTL,
        e => e.min(MAX_TTL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_counts_down_and_expires_at_zero() {
        assert_eq!(ttl(100, 10, 100), Some(10));
        assert_eq!(ttl(100, 10, 109), Some(1));
        assert_eq!(ttl(100, 10, 110), None);
        assert_eq!(ttl(100, 10, 500), None);
        assert_eq!(ttl(u64::MAX, u64::MAX, 5), Some(u64::MAX - 5));
    }

    #[test]
    fn stamping_keeps_the_deadline() {
        assert_eq!(stamp(0, 60, 1000), (1000, 60));
        assert_eq!(stamp(2000, 60, 1000), (1000, 60));
        assert_eq!(stamp(990, 60, 1000), (1000, 50));
        assert_eq!(stamp(900, 60, 1000), (1000, 0));
    }

    #[test]
    fn effective_ttl_defaults_and_caps() {
        assert_eq!(effective_ttl(0), 300);
        assert_eq!(effective_ttl(20), 20);
        assert_eq!(effective_ttl(1800), 1800);
        assert_eq!(effective_ttl(99_999), 1800);
    }
}
