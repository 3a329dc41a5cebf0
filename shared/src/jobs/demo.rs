//! Demo job types for smoke tests, demos and benchmarks (`DEMO_JOBS=false` turns them off).

use std::time::Duration;

use serde::Deserialize;

use super::{JobContext, JobError, JobType};

/// `noop` — does nothing, successfully.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Noop {}

impl JobType for Noop {
    const NAME: &'static str = "noop";

    async fn run(self, _ctx: JobContext) -> Result<serde_json::Value, JobError> {
        Ok(serde_json::Value::Null)
    }
}

/// `sleep` — waits `ms` milliseconds (up to a minute), then succeeds. It stops
/// early when its cancellation is requested. With `panic: true` it panics
/// instead of succeeding, to exercise panic handling.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Milliseconds to wait.
    #[garde(range(max = 60_000))]
    #[schema(maximum = 60_000)]
    pub ms: u64,
    #[serde(default)]
    #[garde(skip)]
    pub panic: bool,
}

impl JobType for Sleep {
    const NAME: &'static str = "sleep";

    async fn run(self, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(self.ms)) => {}
            reason = ctx.cancelled() => {
                return Err(JobError::Permanent(format!("stopped sleeping: {reason:?}")));
            }
        }
        if self.panic {
            panic!("sleep job asked to panic after {} ms", self.ms);
        }
        Ok(serde_json::json!({ "slept_ms": self.ms }))
    }
}

/// `fail` — fails its first `times` attempts (permanently if `permanent`), then succeeds.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// Attempts to fail before succeeding.
    #[garde(range(max = 1000))]
    #[schema(maximum = 1000)]
    pub times: u32,
    #[serde(default)]
    #[garde(skip)]
    pub permanent: bool,
}

impl JobType for Fail {
    const NAME: &'static str = "fail";

    async fn run(self, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        if ctx.attempt > self.times {
            return Ok(serde_json::json!({ "succeeded_on_attempt": ctx.attempt }));
        }
        let message = format!("failing on purpose: attempt {} of {} planned failures", ctx.attempt, self.times);
        Err(if self.permanent { JobError::Permanent(message) } else { JobError::Retryable(message) })
    }
}
