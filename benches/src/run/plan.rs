//! When a run stops and which calls count. Workers claim tickets one call at a time; the plan
//! numbers them, marks the warm-up ones, and refuses further claims once `-n` measured calls
//! were handed out or `-z` has passed since the first measured one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Calls run before measuring starts and left out of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Warmup {
    /// The first this many calls.
    Requests(u64),
    /// The calls started within this long of the run's start.
    Duration(Duration),
}

/// What bounds a run. At least one of `requests` and `duration` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Measured calls to make.
    pub(crate) requests: Option<u64>,
    /// How long to make measured calls.
    pub(crate) duration: Option<Duration>,
    /// Calls to make before measuring.
    pub(crate) warmup: Option<Warmup>,
}

/// The permission to make one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The call's number in the run, unique: payloads are stamped with it.
    pub(crate) seq: u64,
    /// Whether the call is recorded (false during warm-up).
    pub(crate) measured: bool,
}

/// Hands out tickets to the workers until the limits are reached.
#[derive(Debug)]
pub(crate) struct Plan {
    limits: Limits,
    started: Instant,
    claimed: AtomicU64,
    measured: AtomicU64,
    measure_start: OnceLock<Instant>,
    finished: AtomicBool,
}

impl Plan {
    /// A plan for a run starting at `started`.
    pub(crate) fn new(limits: Limits, started: Instant) -> Self {
        Plan {
            limits,
            started,
            claimed: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            measure_start: OnceLock::new(),
            finished: AtomicBool::new(false),
        }
    }

    /// A ticket for a call starting at `now`, or `None` once the run is over.
    pub(crate) fn claim(&self, now: Instant) -> Option<Ticket> {
        if self.is_finished(now) {
            return None;
        }
        let seq = self.claimed.fetch_add(1, Ordering::Relaxed);
        let warming = match self.limits.warmup {
            Some(Warmup::Requests(n)) => seq < n,
            Some(Warmup::Duration(d)) => now < self.started + d,
            None => false,
        };
        if warming {
            return Some(Ticket {
                seq,
                measured: false,
            });
        }

        let measure_start = *self.measure_start.get_or_init(|| now);
        let out_of_time = self
            .limits
            .duration
            .is_some_and(|d| now >= measure_start + d);
        let out_of_calls = self
            .limits
            .requests
            .is_some_and(|n| self.measured.fetch_add(1, Ordering::Relaxed) >= n);
        if out_of_time || out_of_calls {
            self.finished.store(true, Ordering::Relaxed);
            return None;
        }
        Some(Ticket {
            seq,
            measured: true,
        })
    }

    /// Whether no more tickets will be handed out.
    pub(crate) fn is_finished(&self, now: Instant) -> bool {
        if self.finished.load(Ordering::Relaxed) {
            return true;
        }
        match (self.limits.duration, self.measure_start.get()) {
            (Some(d), Some(start)) => now >= *start + d,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: Option<u64>, duration: Option<u64>, warmup: Option<Warmup>) -> Limits {
        Limits {
            requests,
            duration: duration.map(Duration::from_secs),
            warmup,
        }
    }

    fn drain(plan: &Plan, now: Instant) -> Vec<Ticket> {
        std::iter::from_fn(|| plan.claim(now)).take(1000).collect()
    }

    #[test]
    fn request_count_stops_the_run() {
        let t0 = Instant::now();
        let plan = Plan::new(limits(Some(3), None, None), t0);
        let tickets = drain(&plan, t0);
        assert_eq!(tickets.len(), 3);
        assert!(tickets.iter().all(|t| t.measured));
        assert_eq!(tickets.iter().map(|t| t.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(plan.is_finished(t0));
    }

    #[test]
    fn warmup_calls_come_first_and_do_not_count() {
        let t0 = Instant::now();
        let plan = Plan::new(limits(Some(2), None, Some(Warmup::Requests(3))), t0);
        let measured: Vec<bool> = drain(&plan, t0).iter().map(|t| t.measured).collect();
        assert_eq!(measured, [false, false, false, true, true]);
    }

    #[test]
    fn duration_runs_from_the_first_measured_call() {
        let t0 = Instant::now();
        let warmup = Some(Warmup::Duration(Duration::from_secs(2)));
        let plan = Plan::new(limits(None, Some(10), warmup), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);

        assert_eq!(plan.claim(at(1)).map(|t| t.measured), Some(false));
        assert_eq!(plan.claim(at(3)).map(|t| t.measured), Some(true));
        assert_eq!(plan.claim(at(12)).map(|t| t.measured), Some(true));
        assert!(!plan.is_finished(at(12)));
        assert!(plan.is_finished(at(13)));
        assert_eq!(plan.claim(at(13)), None);
    }

    #[test]
    fn with_both_limits_the_first_reached_wins() {
        let t0 = Instant::now();
        let plan = Plan::new(limits(Some(100), Some(1), None), t0);
        assert!(plan.claim(t0).is_some());
        assert_eq!(plan.claim(t0 + Duration::from_secs(1)), None);
    }
}
