//! A coarse clock for the per-envelope path.
//!
//! Envelope times have one-second resolution, yet reading the system clock for every
//! frame showed up in profiles; a value refreshed every 100 ms by one task is exact
//! enough and costs one relaxed load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct CoarseClock {
    now: Arc<AtomicU64>,
}

impl CoarseClock {
    /// Starts the refresher task on `tasks`; it stops with `stop`.
    pub fn start(stop: CancellationToken, tasks: &TaskTracker) -> Self {
        let clock = CoarseClock {
            now: Arc::new(AtomicU64::new(rmb_core::time::now())),
        };
        let now = clock.now.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => now.store(rmb_core::time::now(), Ordering::Relaxed),
                }
            }
        });
        clock
    }

    /// Unix seconds, at most ~100 ms stale.
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}
