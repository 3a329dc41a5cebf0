//! The one apalis handler: looks up the job's type and runs it under its own timeout,
//! inside a span carrying `job.id`, `job.type`, `attempt` and `run`.
//!
//! A run whose lease is lost is cancelled (see `shared::jobs::CancelReason`);
//! if its handler ignores that for one more lease, the run is abandoned here,
//! so a stuck handler cannot hold a slot for good. Its outcome is dropped
//! either way.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::Data;
use shared::backend::ClaimedJob;
use shared::jobs::{CancelReason, JobContext, JobError, Registry, Services};
use tracing::Instrument;

/// What every handler call shares.
pub struct App {
    pub registry: Registry,
    pub services: Arc<Services>,
    /// How long a run that lost its lease may go on before it is abandoned.
    pub lost_lease_grace: Duration,
}

pub async fn run_job(job: ClaimedJob, app: Data<Arc<App>>) -> Result<serde_json::Value, JobError> {
    let span = tracing::info_span!("job", job.id = %job.id, job.type = %job.kind, attempt = job.attempt, run = job.token, queue = %job.queue);
    async move {
        if job.cancel.reason() == Some(CancelReason::LeaseLost) {
            // Claimed ahead, and the lease lapsed before a slot came free.
            return Err(JobError::Retryable("lease lost before the run started".into()));
        }
        let ctx = JobContext {
            id: job.id.clone(),
            tenant: job.tenant.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            run: job.token,
            cancel: job.cancel.clone(),
            services: app.services.clone(),
        };
        let run = app.registry.run(&job.kind, &job.payload, ctx);
        let started = std::time::Instant::now();
        let abandon = async {
            job.cancel.lease_lost().await;
            tokio::time::sleep(app.lost_lease_grace).await;
        };
        let result = tokio::select! {
            // The run first: a job that is done at once never sets up the other wait.
            biased;
            result = tokio::time::timeout(job.timeout, run) => match result {
                Ok(result) => result,
                Err(_) => Err(JobError::Retryable(format!("timed out after {} ms", job.timeout.as_millis()))),
            },
            () = abandon => Err(JobError::Retryable("abandoned: the lease was lost and the handler did not stop".into())),
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
