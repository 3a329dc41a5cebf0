//! The one apalis handler: looks up the job's type and runs it under its own timeout,
//! inside a span carrying `job.id`, `job.type` and `attempt`.

use std::sync::Arc;

use apalis::prelude::Data;
use shared::backend::ClaimedJob;
use shared::jobs::{JobContext, JobError, Registry, Services};
use tracing::Instrument;

/// What every handler call shares.
pub struct App {
    pub registry: Registry,
    pub services: Arc<Services>,
}

pub async fn run_job(job: ClaimedJob, app: Data<Arc<App>>) -> Result<serde_json::Value, JobError> {
    let span =
        tracing::info_span!("job", job.id = %job.id, job.type = %job.kind, attempt = job.attempt, queue = %job.queue);
    async move {
        let ctx = JobContext {
            id: job.id.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancelled: job.cancelled.clone(),
            services: app.services.clone(),
        };
        let run = app.registry.run(&job.kind, &job.payload, ctx);
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(job.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(JobError::Retryable(format!("timed out after {} ms", job.timeout.as_millis()))),
        };
        metrics::histogram!("job_duration_seconds", "queue" => job.queue.clone(), "type" => job.kind.clone())
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => tracing::debug!("job succeeded"),
            Err(err) => tracing::warn!(error = %err, "job attempt failed"),
        }
        result
    }
    .instrument(span)
    .await
}
