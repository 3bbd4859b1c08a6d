//! What offline queues may hold, per destination twin (across all its session ids, which
//! the sender chooses) and for the relay as a whole, in frames and bytes.
//!
//! Every queued frame carries a [`Charge`]: an owned share of the budget, returned when
//! the frame is dropped however that happens (written, expired, pushed out, shut down),
//! so the accounting cannot drift from what is really held. Backend-independent: any
//! queue store can take a charge per frame it keeps.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

/// Bounds of what offline queues hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Frames queued for one twin, all its sessions together.
    pub twin_max_frames: usize,
    /// Bytes queued for one twin, all its sessions together.
    pub twin_max_bytes: usize,
    /// Frames queued on this relay.
    pub total_max_frames: usize,
    /// Bytes queued on this relay.
    pub total_max_bytes: usize,
}

impl Default for QueueLimits {
    /// Room for two full session queues per twin (a session holds at most 10 000 frames
    /// and 64 MiB); a million frames and 1 GiB in all.
    fn default() -> Self {
        QueueLimits {
            twin_max_frames: 20_000,
            twin_max_bytes: 128 << 20,
            total_max_frames: 1_000_000,
            total_max_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    frames: usize,
    bytes: usize,
}

impl Usage {
    fn fits(&self, bytes: usize, max_frames: usize, max_bytes: usize) -> bool {
        self.frames < max_frames && self.bytes.saturating_add(bytes) <= max_bytes
    }

    fn add(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        self.frames = self.frames.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Why a frame could not be queued; the text is what the sender reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error("the queue of offline twin {twin} is full ({frames} envelopes, {bytes} bytes across its sessions at most)")]
    Twin {
        twin: u32,
        frames: usize,
        bytes: usize,
    },
    #[error("the relay's queues for offline twins are full ({frames} envelopes, {bytes} bytes at most), retry later")]
    Relay { frames: usize, bytes: usize },
}

/// The shared budget of offline queues.
#[derive(Debug)]
pub struct QueueBudget {
    limits: QueueLimits,
    total: Mutex<Usage>,
    /// Only twins with something queued have an entry.
    twins: DashMap<u32, Usage>,
}

/// A queued frame's share of the budget; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<QueueBudget>,
    twin: u32,
    bytes: usize,
}

impl QueueBudget {
    pub fn new(limits: QueueLimits) -> Arc<Self> {
        Arc::new(QueueBudget {
            limits,
            total: Mutex::default(),
            twins: DashMap::new(),
        })
    }

    /// Takes room for one frame of `bytes` for `twin`, if both its budget and the
    /// relay's have it.
    pub fn try_charge(self: &Arc<Self>, twin: u32, bytes: usize) -> Result<Charge, OverBudget> {
        let l = &self.limits;
        // The twin's entry is locked while the total is checked, so two frames racing
        // for a twin's last slot cannot both get it.
        let mut usage = self.twins.entry(twin).or_default();
        let refused = if !usage.fits(bytes, l.twin_max_frames, l.twin_max_bytes) {
            OverBudget::Twin {
                twin,
                frames: l.twin_max_frames,
                bytes: l.twin_max_bytes,
            }
        } else {
            let mut total = self.total.lock();
            if total.fits(bytes, l.total_max_frames, l.total_max_bytes) {
                total.add(bytes);
                usage.add(bytes);
                return Ok(Charge {
                    budget: self.clone(),
                    twin,
                    bytes,
                });
            }
            OverBudget::Relay {
                frames: l.total_max_frames,
                bytes: l.total_max_bytes,
            }
        };
        drop(usage);
        // A refused twin with nothing queued keeps no entry.
        self.twins.remove_if(&twin, |_, u| u.frames == 0);
        Err(refused)
    }

    /// Frames and bytes queued for `twin`.
    pub fn twin_usage(&self, twin: u32) -> (usize, usize) {
        self.twins
            .get(&twin)
            .map_or((0, 0), |u| (u.frames, u.bytes))
    }

    /// Frames and bytes queued in all.
    pub fn total_usage(&self) -> (usize, usize) {
        let total = self.total.lock();
        (total.frames, total.bytes)
    }

    /// Twins with something queued.
    pub fn twins(&self) -> usize {
        self.twins.len()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.total.lock().sub(self.bytes);
        if let Some(mut usage) = self.budget.twins.get_mut(&self.twin) {
            usage.sub(self.bytes);
        }
        self.budget
            .twins
            .remove_if(&self.twin, |_, u| u.frames == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<QueueBudget> {
        QueueBudget::new(QueueLimits {
            twin_max_frames: 2,
            twin_max_bytes: 100,
            total_max_frames: 3,
            total_max_bytes: 1000,
        })
    }

    #[test]
    fn per_twin_and_total_caps_and_charges_come_back_on_drop() {
        let b = budget();
        let one = b.try_charge(1, 10).unwrap();
        let two = b.try_charge(1, 10).unwrap();
        assert!(matches!(
            b.try_charge(1, 10),
            Err(OverBudget::Twin { twin: 1, .. })
        ));
        let three = b.try_charge(2, 10).unwrap();
        assert!(matches!(b.try_charge(3, 10), Err(OverBudget::Relay { .. })));
        assert_eq!(b.twins(), 2, "a refused twin leaves no entry behind");
        drop((one, two));
        assert_eq!(b.twin_usage(1), (0, 0));
        assert_eq!(b.twins(), 1);
        assert_eq!(b.total_usage(), (1, 10));
        drop(three);
        assert_eq!((b.total_usage(), b.twins()), ((0, 0), 0));
    }

    #[test]
    fn bytes_count_too() {
        let b = budget();
        assert!(matches!(b.try_charge(1, 101), Err(OverBudget::Twin { .. })));
        let _big = b.try_charge(1, 100).unwrap();
        assert!(b.try_charge(1, 1).is_err());
    }
}
