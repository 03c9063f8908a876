//! Per-tenant request rate limit: a token bucket for each tenant, kept in this process.
//!
//! Each instance counts only the calls it serves, so N instances behind a balancer admit up to
//! N times the rate. Buckets are few (one per tenant that called) and never expire.
//! TODO: a shared limit needs shared state (a counter in PostgreSQL or Redis per window).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A call rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Calls per second, refilled continuously.
    pub per_second: f64,
    /// Calls that may come at once after a quiet spell (the bucket's size); at least 1.
    pub burst: f64,
}

/// Token buckets by tenant.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let limit = RateLimit {
            per_second: limit.per_second,
            burst: limit.burst.max(1.0),
        };
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one call from `tenant`'s bucket at `now`; when it is empty, how long until it
    /// holds one again.
    pub fn admit(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: self.limit.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.limit.per_second;
        Err(Duration::from_secs_f64(wait.min(3600.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_calls_pass_at_the_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit("acme", start), Ok(()));
        }
        let wait = limiter.admit("acme", start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert_eq!(
            limiter.admit("acme", start + Duration::from_millis(100)),
            Ok(())
        );
        assert!(
            limiter
                .admit("acme", start + Duration::from_millis(150))
                .is_err()
        );
        // The bucket never holds more than the burst, however long the quiet spell.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.admit("acme", later), Ok(()));
        }
        assert!(limiter.admit("acme", later).is_err());
    }

    #[test]
    fn tenants_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1.0,
        });
        let now = Instant::now();
        assert_eq!(limiter.admit("a", now), Ok(()));
        assert!(limiter.admit("a", now).is_err());
        assert_eq!(limiter.admit("b", now), Ok(()));
    }
}
