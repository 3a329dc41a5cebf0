//! Retry delays: exponential with full jitter, as Celery's `retry_backoff` +
//! `retry_jitter` and AWS's "full jitter" describe. The delay before attempt n+1
//! is uniform in `[0, min(cap, base × 2^(n-1))]`, which spreads a burst of
//! failures out instead of retrying them in lock-step.

use std::time::Duration;

use rand::Rng;

/// Backoff settings of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// Base 1 s, cap 10 min.
    fn default() -> Self {
        Self { base: Duration::from_secs(1), cap: Duration::from_secs(600) }
    }
}

impl Backoff {
    /// The upper bound of the delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(40);
        self.base.saturating_mul(1u32 << exponent.min(31)).min(self.cap)
    }

    /// A random delay after failed attempt `attempt`, in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_base_up_to_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(4), Duration::from_secs(8));
        assert_eq!(b.ceiling(10), Duration::from_secs(512));
        assert_eq!(b.ceiling(11), Duration::from_secs(600));
        assert_eq!(b.ceiling(500), Duration::from_secs(600));
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let b = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(1) };
        for attempt in 1..20 {
            for _ in 0..50 {
                assert!(b.delay(attempt) <= b.ceiling(attempt));
            }
        }
    }
}
