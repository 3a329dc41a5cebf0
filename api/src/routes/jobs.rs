//! `/v1/jobs`: submit (single and batch), read, list, history, cancel, retry.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::model::{JobRecord, JobStatus, from_millis};
use shared::store::{CancelOutcome, EnqueueOutcome, IdempotencyClaim, JobPage, ListFilter, NewJob, RetryOutcome};

use crate::AppState;
use crate::auth::{Principal, Scope};
use crate::error::{ApiError, PROBLEM_JSON as PROBLEM, Problem, RETRY_CHANGE, RETRY_SUBMISSION};
use crate::openapi::{BatchAccepted, JobEvents};
use crate::submit::{self, BatchRequest, IdempotencyKeyHeader, JobRequest, MAX_BATCH};

/// `POST /v1/jobs` — validates and enqueues one job: 202 with its record.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Submit one job",
    params(IdempotencyKeyHeader),
    request_body(content = JobRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Enqueued (or replayed for a repeated Idempotency-Key): the record.",
            body = JobRecord, headers(
                ("location" = String, description = "`/v1/jobs/{id}`"),
                ("idempotent-replayed" = String, description = "`true` when this answers an earlier request"),
            )),
        (status = 400, description = "`malformed_json`, or `bad_parameter` for the Idempotency-Key.",
            body = Problem, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: no `jobs:write`, or an `email.send` job without `email:send`.",
            body = Problem, content_type = PROBLEM),
        (status = 422, description = "`validation_failed` (with `field`), `unknown_type`, `queue_not_allowed`, \
            `too_many_queues`, `recipient_not_allowed` or `idempotency_key_reused`.",
            body = Problem, content_type = PROBLEM),
        (status = 429, description = "`rate_limited` (`Retry-After`), or `quota_exceeded`: the tenant's live jobs, \
            stored bytes or daily email recipients are at their cap. Nothing was stored.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable` or `storage_full`: nothing was stored; `outcome_unknown`: \
            retry with the same Idempotency-Key; `not_replicated`: stored, not yet on the replicas (`Retry-After`).",
            body = Problem, content_type = PROBLEM),
    )
)]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let tenant = &caller.tenant;
    let body = json_body(&headers, body, state.max_body_bytes)?;
    state.refusals.check(tenant, body.len())?;
    let request: JobRequest = submit::parse(&body)?;
    let job = submit::validate(&state.rules, submitter(&caller), request, "")?;
    state.storage.admit()?;
    let claim = idempotency(&headers, "jobs", &body)?;
    let stored = state.store()?.enqueue(std::slice::from_ref(&job), claim.as_ref(), state.limits).await;
    match stored.map_err(|err| ApiError::from_write(err, RETRY_SUBMISSION))? {
        EnqueueOutcome::Created { at_ms } => {
            count_enqueued(std::slice::from_ref(&job));
            Ok(accepted(&new_record(job, at_ms), false))
        }
        EnqueueOutcome::Replayed { ids } => {
            let id = ids.into_iter().next().unwrap_or_default();
            let (record, _) = state.store()?.get(tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
            Ok(accepted(&record, true))
        }
        EnqueueOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        EnqueueOutcome::RateLimited { retry_after_ms } => {
            state.refusals.remember(tenant, body.len(), retry_after_ms);
            Err(ApiError::rate_limited(retry_after_ms))
        }
        EnqueueOutcome::TooManyQueues { cap } => Err(ApiError::TooManyQueues(cap)),
        EnqueueOutcome::QuotaExceeded { quota, used, cap } => Err(ApiError::quota(quota, used, cap)),
    }
}

/// `POST /v1/jobs/batch` — up to 1,000 jobs, validated all-or-nothing, enqueued
/// in one round trip: 202 with the ids in order.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    summary = "Submit up to 1,000 jobs, all or nothing",
    params(IdempotencyKeyHeader),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "All enqueued (or replayed): their ids, in request order.",
            body = BatchAccepted, headers(
                ("idempotent-replayed" = String, description = "`true` when this answers an earlier request"),
            )),
        (status = 400, description = "`malformed_json`, or `bad_parameter` for the Idempotency-Key.",
            body = Problem, content_type = PROBLEM),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: no `jobs:write`, or an `email.send` job without `email:send`.",
            body = Problem, content_type = PROBLEM),
        (status = 422, description = "A job is invalid (`field` such as `jobs[7].payload.ms`), 0 or over 1,000 jobs, \
            or `idempotency_key_reused`. Nothing was stored.", body = Problem, content_type = PROBLEM),
        (status = 429, description = "`rate_limited` (`Retry-After`), or `quota_exceeded`: the tenant's live jobs, \
            stored bytes or daily email recipients are at their cap. Nothing was stored.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable` or `storage_full`: nothing was stored; `outcome_unknown`: \
            retry with the same Idempotency-Key; `not_replicated`: stored, not yet on the replicas (`Retry-After`).",
            body = Problem, content_type = PROBLEM),
    )
)]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let body = json_body(&headers, body, state.max_body_bytes)?;
    state.refusals.check(&caller.tenant, body.len())?;
    let request: BatchRequest = submit::parse(&body)?;
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid("jobs", format!("send between 1 and {MAX_BATCH} jobs")));
    }
    let jobs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| submit::validate(&state.rules, submitter(&caller), job, &format!("jobs[{index}].")))
        .collect::<Result<Vec<NewJob>, ApiError>>()?;
    state.storage.admit()?;
    let claim = idempotency(&headers, "batch", &body)?;
    let stored = state.store()?.enqueue(&jobs, claim.as_ref(), state.limits).await;
    let (ids, replayed) = match stored.map_err(|err| ApiError::from_write(err, RETRY_SUBMISSION))? {
        EnqueueOutcome::Created { .. } => {
            count_enqueued(&jobs);
            (jobs.into_iter().map(|j| j.id).collect(), false)
        }
        EnqueueOutcome::Replayed { ids } => (ids, true),
        EnqueueOutcome::KeyReused => return Err(ApiError::IdempotencyKeyReused),
        EnqueueOutcome::RateLimited { retry_after_ms } => {
            state.refusals.remember(&caller.tenant, body.len(), retry_after_ms);
            return Err(ApiError::rate_limited(retry_after_ms));
        }
        EnqueueOutcome::TooManyQueues { cap } => return Err(ApiError::TooManyQueues(cap)),
        EnqueueOutcome::QuotaExceeded { quota, used, cap } => return Err(ApiError::quota(quota, used, cap)),
    };
    let mut response = (StatusCode::ACCEPTED, Json(json!({ "ids": ids }))).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn submitter(caller: &Principal) -> submit::Submitter<'_> {
    submit::Submitter { tenant: &caller.tenant, may_email: caller.has(Scope::EmailSend) }
}

/// `GET /v1/jobs/{id}` — the record.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "Read a job",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The record.", body = JobRecord),
        (status = 404, description = "`not_found`: unknown, another tenant's, or deleted after retention.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let tenant = &caller.tenant;
    let (record, _) = state.store()?.get(tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
    Ok(Json(record))
}

/// `GET /v1/jobs/{id}/events` — the job's status history, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    summary = "A job's status history",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Transitions, oldest first.", body = JobEvents),
        (status = 404, description = "`not_found`", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_job_events(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let tenant = &caller.tenant;
    let (_, history) = state.store()?.get(tenant, &id).await?.ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    Ok(Json(json!({ "job_id": id, "events": history.entries, "dropped": history.dropped })))
}

/// Read as text, so a bad value gets this API's 400 rather than axum's rejection;
/// the `#[param]` types say what is accepted.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs on this queue.
    queue: Option<String>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Page size, 1–500; default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// `payload` to have each record carry its payload (left out by default).
    #[param(value_type = Option<String>, example = "payload")]
    include: Option<String>,
}

/// `GET /v1/jobs?status=&queue=&type=&limit=&cursor=&include=` — newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "List jobs, newest first",
    description = "Each request examines at most 2,000 index entries, so a narrow filter can return a short \
        page that still has a `next_cursor`: keep paging until it is `null`. Records leave out their `payload` \
        unless `include=payload`.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page.", body = JobPage),
        (status = 400, description = "`bad_parameter`: `status` or `limit` (named in `field`).",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<shared::store::JobPage>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let tenant = &caller.tenant;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|message| ApiError::BadParameter { field: "status".into(), message })?;
    let limit = super::limit_param(query.limit.as_deref(), 50, 500)?;
    if query.cursor.as_deref().is_some_and(|cursor| !shared::store::valid_cursor(cursor)) {
        let message = "not a cursor a listing returned (use next_cursor as it is)".into();
        return Err(ApiError::BadParameter { field: "cursor".into(), message });
    }
    let payloads = super::include_param(query.include.as_deref())?;
    let filter = ListFilter { status, queue: query.queue, kind: query.kind };
    Ok(Json(state.store()?.list(tenant, &filter, limit, query.cursor.as_deref(), payloads).await?))
}

/// `POST /v1/jobs/{id}/cancel` — cancels a waiting job (200), or flags a running
/// one (202; it will not be retried and its handler can see the flag).
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Was queued, scheduled or retrying: now `cancelled`.", body = JobRecord),
        (status = 202, description = "Is running: flagged (`cancel_requested`), never retried; its handler \
            sees the flag at the next heartbeat.", body = JobRecord),
        (status = 404, description = "`not_found`", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`invalid_state`: already succeeded, failed or cancelled.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let tenant = &caller.tenant;
    let cancelled = state.store()?.cancel(tenant, &id, state.limits.rate).await;
    let status = match cancelled.map_err(|e| ApiError::from_write(e, RETRY_CHANGE))? {
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Flagged => StatusCode::ACCEPTED,
        CancelOutcome::Conflict(status) => return Err(ApiError::InvalidState { status, action: "cancelling" }),
        CancelOutcome::NotFound => return Err(ApiError::JobNotFound(id)),
        CancelOutcome::RateLimited { retry_after_ms } => return Err(ApiError::rate_limited(retry_after_ms)),
    };
    let (record, _) = state.store()?.get(tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
    Ok((status, Json(record)).into_response())
}

/// `POST /v1/jobs/{id}/retry` — a failed or cancelled job runs again with a fresh attempt budget.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    summary = "Run a failed or cancelled job again",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Queued again with `attempts` 0.", body = JobRecord),
        (status = 404, description = "`not_found`", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`invalid_state`: neither failed nor cancelled.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let tenant = &caller.tenant;
    match state
        .store()?
        .retry(tenant, &id, state.limits.rate)
        .await
        .map_err(|e| ApiError::from_write(e, RETRY_CHANGE))?
    {
        RetryOutcome::Queued => {}
        RetryOutcome::Conflict(status) => return Err(ApiError::InvalidState { status, action: "retrying" }),
        RetryOutcome::NotFound => return Err(ApiError::JobNotFound(id)),
        RetryOutcome::RateLimited { retry_after_ms } => return Err(ApiError::rate_limited(retry_after_ms)),
    }
    let (record, _) = state.store()?.get(tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
    Ok(Json(record))
}

/// Unknown `/v1` routes answer in the same JSON shape as every other error.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>, limit: u64) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| ApiError::from_body(rejection, limit))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    match content_type {
        None => Ok(body),
        Some(ct) if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => Ok(body),
        Some(_) => Err(ApiError::UnsupportedMediaType),
    }
}

fn idempotency(headers: &HeaderMap, route: &str, body: &[u8]) -> Result<Option<IdempotencyClaim>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(raw) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::BadParameter { field: "Idempotency-Key".into(), message: "send the header once".into() });
    }
    let raw = raw.to_str().map_err(|_| ApiError::BadParameter {
        field: "Idempotency-Key".into(),
        message: "use printable ASCII".into(),
    })?;
    Ok(Some(IdempotencyClaim { key: submit::idempotency_key(raw)?, fingerprint: submit::fingerprint(route, body) }))
}

fn count_enqueued(jobs: &[NewJob]) {
    for job in jobs {
        metrics::counter!("jobs_enqueued_total", "queue" => job.queue.clone(), "type" => job.kind.clone()).increment(1);
    }
}

fn accepted(record: &JobRecord, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(record)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The record a new job has, built without reading it back.
fn new_record(job: NewJob, created_ms: i64) -> JobRecord {
    let due_ms = job.when.due_ms(created_ms);
    let scheduled = due_ms > created_ms;
    JobRecord {
        id: job.id,
        tenant: job.tenant,
        kind: job.kind,
        queue: job.queue,
        status: if scheduled { JobStatus::Scheduled } else { JobStatus::Queued },
        attempts: 0,
        max_attempts: job.max_attempts,
        payload: Some(serde_json::from_str(&job.payload).unwrap_or_default()),
        created_at: from_millis(created_ms),
        scheduled_at: Some(from_millis(due_ms)),
        started_at: None,
        finished_at: None,
        last_error: None,
        result: None,
        timeout_ms: job.timeout_ms,
        cancel_requested: false,
    }
}
