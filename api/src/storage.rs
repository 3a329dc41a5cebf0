//! Admission control: new jobs are refused (`503 storage_full`) once Redis's
//! memory passes a high-water mark of its `maxmemory`, well before Redis itself
//! refuses writes, so the workers' acks and deletions, which free memory, go on.
//! A background task reads `INFO memory` twice a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::error::ApiError;

/// How often Redis's memory is read.
const EVERY: Duration = Duration::from_millis(500);

/// Redis's memory use as last read, in per mille of `maxmemory` (0 when it has none).
#[derive(Clone)]
pub struct Storage {
    used_per_mille: Arc<AtomicU64>,
    high_water_percent: u64,
}

impl Storage {
    pub fn new(high_water_percent: u64) -> Self {
        Self { used_per_mille: Arc::default(), high_water_percent }
    }

    /// Refuses a new job while memory is past the mark.
    pub fn admit(&self) -> Result<(), ApiError> {
        let used = self.used_per_mille.load(Ordering::Relaxed);
        if used >= self.high_water_percent * 10 {
            return Err(ApiError::StorageFull { used_percent: used / 10, high_water_percent: self.high_water_percent });
        }
        Ok(())
    }

    /// Keeps the reading current for as long as the API runs.
    pub fn watch(&self, mut conn: ConnectionManager) {
        let used = self.used_per_mille.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            loop {
                ticks.tick().await;
                if let Ok(info) = redis::cmd("INFO").arg("memory").query_async::<String>(&mut conn).await {
                    used.store(per_mille(&info), Ordering::Relaxed);
                }
            }
        });
    }
}

/// `used_memory` in per mille of `maxmemory`, from an `INFO memory` reply.
fn per_mille(info: &str) -> u64 {
    let field = |name: &str| -> u64 {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok()).unwrap_or(0)
    };
    let (used, max) = (field("used_memory"), field("maxmemory"));
    used.saturating_mul(1000).checked_div(max).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_against_maxmemory_and_none_means_no_limit() {
        assert_eq!(per_mille("used_memory:900\r\nused_memory_human:900B\r\nmaxmemory:1000\r\n"), 900);
        assert_eq!(per_mille("used_memory:900\r\nmaxmemory:0\r\n"), 0);
        let storage = Storage::new(85);
        storage.used_per_mille.store(849, Ordering::Relaxed);
        assert!(storage.admit().is_ok());
        storage.used_per_mille.store(850, Ordering::Relaxed);
        assert!(matches!(storage.admit(), Err(ApiError::StorageFull { used_percent: 85, .. })));
    }
}
