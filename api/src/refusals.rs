//! Tenants the rate limit has just refused, remembered by each API instance:
//! until the refusal's `Retry-After` has passed, a request of theirs at least as
//! large is refused again before its body is parsed. A tenant flooding batches
//! past its limit then costs the API a lookup per request, not the parsing and
//! validation of a thousand jobs each time, so the others' requests do not wait
//! behind that work. Smaller requests still go to the bucket in Redis, which
//! may have room for them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// Tenants remembered at most; past it, those whose refusal is over are forgotten
/// (and, if none is, the oldest entries go).
const REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct Refusals {
    by_tenant: Mutex<HashMap<String, Refusal>>,
}

#[derive(Clone, Copy)]
struct Refusal {
    until: Instant,
    body_bytes: usize,
}

impl Refusals {
    /// `429 rate_limited` while `tenant` was refused a request of at most this size.
    /// (`tenant` may name a kind of request too, such as `acme\tretry-failed`, whose
    /// size is then its `limit`.)
    pub fn check(&self, tenant: &str, body_bytes: usize) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut by_tenant = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        match by_tenant.get(tenant).copied() {
            Some(refusal) if refusal.until <= now => {
                by_tenant.remove(tenant);
                Ok(())
            }
            Some(refusal) if body_bytes >= refusal.body_bytes => {
                metrics::counter!("rate_limited_early_total").increment(1);
                Err(ApiError::rate_limited((refusal.until - now).as_millis() as u64))
            }
            _ => Ok(()),
        }
    }

    /// The bucket refused `tenant` a request of `body_bytes` for `retry_after_ms`.
    pub fn remember(&self, tenant: &str, body_bytes: usize, retry_after_ms: u64) {
        let now = Instant::now();
        let refusal = Refusal { until: now + Duration::from_millis(retry_after_ms), body_bytes };
        let mut by_tenant = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if by_tenant.len() >= REMEMBERED && !by_tenant.contains_key(tenant) {
            by_tenant.retain(|_, r| r.until > now);
            if by_tenant.len() >= REMEMBERED {
                by_tenant.clear();
            }
        }
        // The latest refusal is what the bucket said last.
        by_tenant.insert(tenant.to_owned(), refusal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_size_is_refused_again_until_retry_after_and_smaller_ones_pass() {
        let refusals = Refusals::default();
        refusals.remember("a", 1_000, 60_000);
        assert!(matches!(refusals.check("a", 1_000), Err(ApiError::RateLimited(60))));
        assert!(refusals.check("a", 2_000).is_err());
        assert!(refusals.check("a", 999).is_ok(), "a smaller request may fit the bucket");
        assert!(refusals.check("b", 5_000).is_ok(), "other tenants are not touched");
        refusals.remember("c", 10, 0);
        assert!(refusals.check("c", 10).is_ok(), "a refusal that is over is forgotten");
    }
}
