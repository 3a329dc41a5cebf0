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
use shared::store::{CancelOutcome, EnqueueOutcome, IdempotencyClaim, ListFilter, NewJob, RetryOutcome};

use crate::AppState;
use crate::error::ApiError;
use crate::submit::{self, BatchRequest, JobRequest, MAX_BATCH};
use crate::tenant::Tenant;

/// `POST /v1/jobs` — validates and enqueues one job: 202 with its record.
pub async fn create_job(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, state.max_body_bytes)?;
    let request: JobRequest = submit::parse(&body)?;
    let job = submit::validate(&state.registry, &tenant, request, "")?;
    let claim = idempotency(&headers, "jobs", &body)?;
    match state.store()?.enqueue(std::slice::from_ref(&job), claim.as_ref()).await? {
        EnqueueOutcome::Created { at_ms } => Ok(accepted(&new_record(job, at_ms), false)),
        EnqueueOutcome::Replayed { ids } => {
            let id = ids.into_iter().next().unwrap_or_default();
            let (record, _) = state.store()?.get(&tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
            Ok(accepted(&record, true))
        }
        EnqueueOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

/// `POST /v1/jobs/batch` — up to 1,000 jobs, validated all-or-nothing, enqueued
/// in one round trip: 202 with the ids in order.
pub async fn create_batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, state.max_body_bytes)?;
    let request: BatchRequest = submit::parse(&body)?;
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid("jobs", format!("send between 1 and {MAX_BATCH} jobs")));
    }
    let jobs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| submit::validate(&state.registry, &tenant, job, &format!("jobs[{index}].")))
        .collect::<Result<Vec<NewJob>, ApiError>>()?;
    let claim = idempotency(&headers, "batch", &body)?;
    let (ids, replayed) = match state.store()?.enqueue(&jobs, claim.as_ref()).await? {
        EnqueueOutcome::Created { .. } => (jobs.into_iter().map(|j| j.id).collect(), false),
        EnqueueOutcome::Replayed { ids } => (ids, true),
        EnqueueOutcome::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let mut response = (StatusCode::ACCEPTED, Json(json!({ "ids": ids }))).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /v1/jobs/{id}` — the record.
pub async fn get_job(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let (record, _) = state.store()?.get(&tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
    Ok(Json(record))
}

/// `GET /v1/jobs/{id}/events` — the job's status history, oldest first.
pub async fn get_job_events(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, history) = state.store()?.get(&tenant, &id).await?.ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    Ok(Json(json!({ "job_id": id, "events": history })))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    queue: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/jobs?status=&queue=&type=&limit=&cursor=` — newest first.
pub async fn list_jobs(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ListQuery>,
) -> Result<Json<shared::store::JobPage>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|message| ApiError::BadParameter { field: "status".into(), message })?;
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=500).contains(n)).ok_or_else(|| {
            ApiError::BadParameter { field: "limit".into(), message: "a number from 1 to 500".into() }
        })?,
    };
    let filter = ListFilter { status, queue: query.queue, kind: query.kind };
    Ok(Json(state.store()?.list(&tenant, &filter, limit, query.cursor.as_deref()).await?))
}

/// `POST /v1/jobs/{id}/cancel` — cancels a waiting job (200), or flags a running
/// one (202; it will not be retried and its handler can see the flag).
pub async fn cancel_job(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = match state.store()?.cancel(&tenant, &id).await? {
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Flagged => StatusCode::ACCEPTED,
        CancelOutcome::Conflict(status) => return Err(ApiError::InvalidState { status, action: "cancelling" }),
        CancelOutcome::NotFound => return Err(ApiError::JobNotFound(id)),
    };
    let (record, _) = state.store()?.get(&tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
    Ok((status, Json(record)).into_response())
}

/// `POST /v1/jobs/{id}/retry` — a failed or cancelled job runs again with a fresh attempt budget.
pub async fn retry_job(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    match state.store()?.retry(&tenant, &id).await? {
        RetryOutcome::Queued => {}
        RetryOutcome::Conflict(status) => return Err(ApiError::InvalidState { status, action: "retrying" }),
        RetryOutcome::NotFound => return Err(ApiError::JobNotFound(id)),
    }
    let (record, _) = state.store()?.get(&tenant, &id).await?.ok_or(ApiError::JobNotFound(id))?;
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
    let scheduled = job.run_at_ms > created_ms;
    JobRecord {
        id: job.id,
        tenant: job.tenant,
        kind: job.kind,
        queue: job.queue,
        status: if scheduled { JobStatus::Scheduled } else { JobStatus::Queued },
        attempts: 0,
        max_attempts: job.max_attempts,
        payload: serde_json::from_str(&job.payload).unwrap_or_default(),
        created_at: from_millis(created_ms),
        scheduled_at: Some(from_millis(if scheduled { job.run_at_ms } else { created_ms })),
        started_at: None,
        finished_at: None,
        last_error: None,
        result: None,
        timeout_ms: job.timeout_ms,
        cancel_requested: false,
    }
}
