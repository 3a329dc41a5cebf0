//! `/v1/queues`: counts per queue and the live workers; retrying a queue's failed jobs.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::store::RetryFailedOutcome;

use crate::AppState;
use crate::auth::{Principal, Scope};
use crate::error::{ApiError, PROBLEM_JSON, Problem, RETRY_CHANGE};
use crate::openapi::{QueuesOverview, RetriedFailed};

/// Most failed jobs one request queues again.
const MAX_RETRY_FAILED: usize = 1_000;

/// `GET /v1/queues` — per-queue counts of the caller's jobs; for `admin` tokens also
/// each queue's latency and the workers that sent a heartbeat recently.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    summary = "Queue counts and live workers",
    responses(
        (status = 200, description = "Counts of the caller's jobs per queue; with `admin`, also `latency_ms` \
            and the workers seen within the last 3 leases.",
            body = QueuesOverview),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub async fn list_queues(State(state): State<AppState>, caller: Principal) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let store = state.store()?;
    let mut queues = store.queue_stats(Some(&caller.tenant)).await?;
    if !caller.is_operator() {
        return Ok(Json(json!({ "queues": queues })));
    }
    let latency = store.queue_latency().await?;
    for queue in &mut queues {
        queue.latency_ms = latency.get(&queue.name).copied().or(Some(0));
    }
    Ok(Json(json!({ "queues": queues, "workers": store.workers().await? })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryFailedQuery {
    /// Most jobs to queue again (1–1,000; default 100); each takes a token of the
    /// tenant's submission rate limit.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1_000)]
    limit: Option<String>,
}

/// `POST /v1/queues/{queue}/retry-failed` — queues again the caller's failed jobs on
/// `queue`, oldest failure first, each with a fresh attempt budget.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/retry-failed",
    tag = "queues",
    summary = "Retry a queue's failed jobs",
    params(("queue" = String, Path, description = "Queue name"), RetryFailedQuery),
    responses(
        (status = 200, description = "How many were queued again; `more` when failed jobs may remain.",
            body = RetriedFailed),
        (status = 400, description = "`bad_parameter` for `limit`.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub async fn retry_failed(
    State(state): State<AppState>,
    caller: Principal,
    Path(queue): Path<String>,
    Query(query): Query<RetryFailedQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::JobsWrite)?;
    if !crate::submit::valid_queue(&queue) {
        let message = "use 1-64 characters from [A-Za-z0-9._-]".into();
        return Err(ApiError::BadParameter { field: "queue".into(), message });
    }
    let limit = super::limit_param(query.limit.as_deref(), 100, MAX_RETRY_FAILED)?;
    // Refused calls are remembered apart from submissions, by their `limit`.
    let refusals_key = format!("{}\tretry-failed", caller.tenant);
    state.refusals.check(&refusals_key, limit)?;
    let retried = state.store()?.retry_failed(&caller.tenant, &queue, limit, state.limits.rate).await;
    match retried.map_err(|err| ApiError::from_write(err, RETRY_CHANGE))? {
        RetryFailedOutcome::Retried { retried, more } => {
            Ok(Json(json!({ "queue": queue, "retried": retried, "more": more })))
        }
        RetryFailedOutcome::RateLimited { retry_after_ms } => {
            state.refusals.remember(&refusals_key, limit, retry_after_ms);
            Err(ApiError::rate_limited(retry_after_ms))
        }
    }
}
