//! `GET /metrics` in the Prometheus text format, and the middleware that counts
//! and times every request by route.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use shared::model::JobStatus;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// The process's recorder: one per process, shared by every API instance in it.
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = shared::telemetry::install_metrics(None)?;
            // Histograms keep their samples until upkeep folds them: without a
            // scrape they would grow with every request.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    ticks.tick().await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .as_ref()
}

/// Counts and times each request under its route pattern (not the raw path,
/// which would make one series per job id).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A fixed set: a made-up method must not make a series of its own.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let path =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` — request and enqueue counters, plus queue counts and live
/// workers read from Redis at scrape time (skipped while Redis is away). Needs a
/// token with the `admin` scope (Prometheus: `authorization.credentials_file`).
pub async fn get_metrics(State(state): State<AppState>, caller: Principal) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let Some(recorder) = recorder() else {
        return Ok((StatusCode::NOT_FOUND, "metrics are not enabled in this process").into_response());
    };
    if let Ok(store) = state.store() {
        if let Ok(queues) = store.queue_stats(None).await {
            for q in &queues {
                for status in JobStatus::ALL {
                    metrics::gauge!("queue_jobs", "queue" => q.name.clone(), "status" => status.as_str())
                        .set(q.count(status) as f64);
                }
            }
        }
        if let Ok(latency) = store.queue_latency().await {
            for (queue, ms) in latency {
                metrics::gauge!("queue_latency_seconds", "queue" => queue).set(ms as f64 / 1000.0);
            }
        }
        if let Ok(workers) = store.workers().await {
            metrics::gauge!("workers_live").set(workers.len() as f64);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], recorder.render()).into_response())
}
