//! How often the relay may ask the registrar afresh about a twin because of what an
//! outsider sent.
//!
//! A federation post for a twin our cached record puts elsewhere may be right: the twin
//! may have just moved here (the original relay queues every post, and its sender reads
//! a 4xx as final). So before refusing, the relay looks the twin up again, bypassing the
//! cache. Anyone can post, so these lookups share one budget per second for the whole
//! relay: past it the cached record decides, as it did before, and the registrar sees
//! no more than the budget however many posts arrive.

use parking_lot::Mutex;

/// Fresh lookups per second, by default.
pub const DEFAULT_RECHECKS_PER_SECOND: u32 = 20;

pub struct Rechecks {
    /// (unix second, lookups allowed in it so far).
    used: Mutex<(u64, u32)>,
    per_second: u32,
}

impl Rechecks {
    pub fn new(per_second: u32) -> Self {
        Rechecks {
            used: Mutex::new((0, 0)),
            per_second,
        }
    }

    /// True (and counted) if one more fresh lookup fits in the budget of second `now`.
    pub fn allow(&self, now: u64) -> bool {
        let mut used = self.used.lock();
        if used.0 != now {
            *used = (now, 0);
        }
        if used.1 >= self.per_second {
            return false;
        }
        used.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_per_second() {
        let rechecks = Rechecks::new(2);
        assert!(rechecks.allow(100));
        assert!(rechecks.allow(100));
        assert!(!rechecks.allow(100), "the third in one second");
        assert!(rechecks.allow(101), "a new second, a new budget");
    }
}
