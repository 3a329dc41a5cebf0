//! `AckLayer`: the backend's layer, which the apalis Worker wraps around every
//! handler call. It turns each call's final result (after the user layers:
//! timeout, panic catching…) into an [`Outcome`] for the acker, unless the run's
//! lease was lost first: then the outcome is dropped. No per-job box.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::layers::catch_panic::PanicError;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::Task;
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use tower::{Layer, Service};

use super::{AckMsg, ClaimedJob, Inner, Outcome, OutcomeKind, RunKey};
use crate::backoff::Backoff;
use crate::events::one_line;
use crate::jobs::{Cancellation, JobError};

/// Longest error text kept on a record.
const MAX_ERROR_LEN: usize = 2_000;

#[derive(Clone)]
pub struct AckLayer {
    tx: mpsc::UnboundedSender<AckMsg>,
    inner: Arc<Inner>,
}

impl AckLayer {
    pub(super) fn new(tx: mpsc::UnboundedSender<AckMsg>, inner: Arc<Inner>) -> Self {
        Self { tx, inner }
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService { inner, tx: self.tx.clone(), backend: self.inner.clone() }
    }
}

#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    tx: mpsc::UnboundedSender<AckMsg>,
    backend: Arc<Inner>,
}

/// What the acker needs to know about the run once it ends.
struct Attempt {
    key: RunKey,
    cancel: Cancellation,
    meta: String,
    queue: String,
    kind: String,
    attempt: u32,
    max_attempts: u32,
    backoff: Backoff,
    retention_secs: Option<u64>,
}

impl<S> Service<Task<ClaimedJob>> for AckService<S>
where
    S: Service<Task<ClaimedJob>>,
    S::Error: Into<BoxDynError>,
    S::Response: serde::Serialize,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = AckFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let job = &task.args;
        let attempt = Attempt {
            key: (job.id.clone(), job.token),
            cancel: job.cancel.clone(),
            meta: job.meta.clone(),
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            retention_secs: job.retention_secs,
        };
        AckFuture {
            inner: self.inner.call(task),
            attempt: Some(attempt),
            tx: self.tx.clone(),
            running: Running { backend: self.backend.clone(), started: Instant::now() },
        }
    }
}

pin_project! {
    pub struct AckFuture<F> {
        #[pin]
        inner: F,
        attempt: Option<Attempt>,
        tx: mpsc::UnboundedSender<AckMsg>,
        running: Running,
    }
}

/// Counts one running job for as long as it lives, however its future ends
/// (finished, or dropped when the shutdown grace runs out), and then adds its
/// run time to the backend's average.
struct Running {
    backend: Arc<Inner>,
    started: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.backend.running.fetch_sub(1, Ordering::Relaxed);
        self.backend.job_time.record(self.started.elapsed());
    }
}

impl<F, T, E> Future for AckFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxDynError>,
    T: serde::Serialize,
{
    type Output = Result<T, BoxDynError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result.map_err(Into::into),
        };
        if let Some(attempt) = this.attempt.take() {
            if attempt.cancel.finish() {
                let outcome = outcome(attempt, &result);
                // A closed channel means the process is going down: the lease will
                // expire and the job will run again, which at-least-once allows.
                let _ = this.tx.send(AckMsg::Done(outcome));
            } else {
                // The lease was lost while the handler ran: another run may own the
                // job now, and this one's outcome must not reach Redis.
                this.running.backend.leases().remove(&attempt.key);
                metrics::counter!("jobs_outcomes_dropped_total").increment(1);
                tracing::warn!(job.id = %attempt.key.0, run = attempt.key.1, "dropped the outcome of a run whose lease was lost");
            }
        }
        Poll::Ready(result)
    }
}

fn outcome<T: serde::Serialize>(attempt: Attempt, result: &Result<T, BoxDynError>) -> Outcome {
    let (mut kind, text) = match result {
        Ok(value) => (OutcomeKind::Succeeded, serde_json::to_string(value).unwrap_or_else(|_| "null".into())),
        Err(err) => classify(err.as_ref()),
    };
    // The worker decides retry-or-fail: it knows the attempt budget.
    let mut retry_delay = Duration::ZERO;
    if kind == OutcomeKind::Retry {
        if attempt.attempt < attempt.max_attempts {
            retry_delay = attempt.backoff.delay(attempt.attempt);
        } else {
            kind = OutcomeKind::Fail;
        }
    }
    let label = match kind {
        OutcomeKind::Succeeded => "succeeded",
        OutcomeKind::Retry => "retried",
        OutcomeKind::Fail => "failed",
    };
    metrics::counter!("jobs_attempts_total", "queue" => attempt.queue.clone(), "type" => attempt.kind, "outcome" => label)
        .increment(1);
    Outcome {
        key: attempt.key,
        meta: attempt.meta,
        queue: attempt.queue,
        kind,
        retry_delay,
        retention_secs: attempt.retention_secs,
        text,
    }
}

/// Sorts a failed attempt: permanent failures end the job; everything else —
/// retryable errors, panics, timeouts — is retried while attempts remain.
fn classify(err: &(dyn std::error::Error + Send + Sync + 'static)) -> (OutcomeKind, String) {
    let (kind, message) = if let Some(job) = err.downcast_ref::<JobError>() {
        match job {
            JobError::Permanent(message) => (OutcomeKind::Fail, message.clone()),
            JobError::Retryable(message) => (OutcomeKind::Retry, message.clone()),
        }
    } else if let Some(panic) = find::<PanicError>(err) {
        (OutcomeKind::Retry, format!("panicked: {}", panic.0))
    } else if find::<tower::timeout::error::Elapsed>(err).is_some() {
        (OutcomeKind::Retry, "timed out (worker ceiling)".to_owned())
    } else {
        (OutcomeKind::Retry, err.to_string())
    };
    let mut message = one_line(&message);
    if message.len() > MAX_ERROR_LEN {
        let cut = (0..=MAX_ERROR_LEN).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
        message.truncate(cut);
    }
    (kind, message)
}

/// Finds an error of type `E` in `err` or its sources (panics arrive inside an `AbortError`).
fn find<'a, E: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(abort) = e.downcast_ref::<AbortError>() {
            current = std::error::Error::source(abort);
            continue;
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(err: impl Into<BoxDynError>) -> BoxDynError {
        err.into()
    }

    #[test]
    fn permanent_job_errors_fail_and_retryable_ones_retry() {
        let (kind, text) = classify(boxed(JobError::Permanent("550 no".into())).as_ref());
        assert_eq!((kind, text.as_str()), (OutcomeKind::Fail, "550 no"));
        let (kind, _) = classify(boxed(JobError::Retryable("451".into())).as_ref());
        assert_eq!(kind, OutcomeKind::Retry);
    }

    #[test]
    fn panics_inside_abort_errors_are_retried_with_their_message() {
        let err = boxed(AbortError::new(PanicError("boom".into())));
        let (kind, text) = classify(err.as_ref());
        assert_eq!(kind, OutcomeKind::Retry);
        assert_eq!(text, "panicked: boom");
    }

    #[test]
    fn error_text_is_one_bounded_line() {
        let long = "x\ty\n".repeat(2_000);
        let (_, text) = classify(boxed(JobError::Retryable(long)).as_ref());
        assert!(text.len() <= MAX_ERROR_LEN && !text.contains(['\t', '\n']));
    }
}
