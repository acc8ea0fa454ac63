//! Time as the pipeline sees it, injectable so tests run backoff without sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock with wall time and a cancellable sleep.
pub trait Clock: Send + Sync {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, unix seconds (for persisted counters).
    fn unix(&self) -> f64;
    /// Sleeps up to `duration`; returns early (`false`) when `cancel` is set.
    fn sleep(&self, duration: Duration, cancel: &AtomicBool) -> bool;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    fn sleep(&self, duration: Duration, cancel: &AtomicBool) -> bool {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            if cancel.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
        }
        !cancel.load(Ordering::SeqCst)
    }
}
