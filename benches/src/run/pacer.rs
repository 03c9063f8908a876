//! `--rate` pacing. Call k of the run is due at start + k / rate: a fixed schedule rather than a
//! sleep between calls, so the average rate does not drift when calls or timers run late. A
//! worker that falls behind catches up (at most one call per idle worker at a time).
//!
//! tokio's timers tick in milliseconds, so above ~1000 calls/s calls leave in small bursts
//! that average to the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Hands out send times at a fixed rate, shared by all workers.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Instant,
    rate: f64,
    next: AtomicU64,
}

impl Pacer {
    /// A pacer of `rate` calls per second, the first due at `start`.
    pub(crate) fn new(rate: f64, start: Instant) -> Self {
        Pacer {
            start,
            rate,
            next: AtomicU64::new(0),
        }
    }

    /// Reserves the next slot and returns when it is due.
    pub(crate) fn reserve(&self) -> Instant {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.start + offset(k, self.rate)
    }
}

/// When call `k` is due after the start, at `rate` calls per second.
fn offset(k: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(k as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spaced_by_the_inverse_rate() {
        assert_eq!(offset(0, 4.0), Duration::ZERO);
        assert_eq!(offset(1, 4.0), Duration::from_millis(250));
        assert_eq!(offset(10, 4.0), Duration::from_millis(2500));
        assert_eq!(offset(3, 0.5), Duration::from_secs(6));
        assert_eq!(offset(1000, 1000.0), Duration::from_secs(1));
    }

    #[test]
    fn reservations_follow_the_schedule_whoever_asks() {
        let t0 = Instant::now();
        let pacer = Pacer::new(100.0, t0);
        let due: Vec<Duration> = (0..3).map(|_| pacer.reserve() - t0).collect();
        assert_eq!(
            due,
            [
                Duration::ZERO,
                Duration::from_millis(10),
                Duration::from_millis(20)
            ]
        );
    }
}
