//! `ApiError`: every failure a client can see, as a status and an
//! `application/problem+json` body `{type, title, status, code, message, field?}`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::error::StoreError;
use shared::model::JobStatus;

/// The content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 — the body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 400 — a header or query parameter is malformed.
    #[error("{message}")]
    BadParameter { field: String, message: String },
    /// 422 — a field has a wrong type or value.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// 422 — no job type has this name.
    #[error("unknown job type `{0}`")]
    UnknownType(String),
    /// 422 — the operator fixed the queues (`QUEUES_ALLOWED`), and this is not one.
    #[error("queue `{queue}` is not one of the queues this deployment allows (QUEUES_ALLOWED)")]
    QueueNotAllowed { field: String, queue: String },
    /// 422 — the jobs would take the tenant past its cap on distinct queues.
    #[error(
        "this would put your jobs in more than {0} queues (TENANT_MAX_QUEUES); use a queue you already have jobs in"
    )]
    TooManyQueues(u32),
    /// 422 — the Idempotency-Key was already used with a different request.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// 413 — one job's payload is over `MAX_PAYLOAD_BYTES`.
    #[error("the payload is over the {limit}-byte limit (MAX_PAYLOAD_BYTES)")]
    PayloadOverLimit { field: String, limit: usize },
    /// 413 — the body is over the limit.
    #[error("the request body is over the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// 415 — the body is not `application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 404 — no such job (for this tenant).
    #[error("no job with id `{0}`")]
    JobNotFound(String),
    /// 404 — no such route.
    #[error("no route {0}")]
    RouteNotFound(String),
    /// 405 — the route exists, but not for this method.
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    /// 409 — the job's status does not allow this.
    #[error("the job is {status}; {action} is not possible")]
    InvalidState { status: JobStatus, action: &'static str },
    /// 401 — no token, or one that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 — the token lacks a scope, or the request's Origin is not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 426 — `GET /v1/events` needs a WebSocket upgrade or `Accept: text/event-stream`.
    #[error("open a WebSocket, or send `Accept: text/event-stream`")]
    UpgradeRequired,
    /// 503 — Redis's memory is past the high-water mark: new jobs wait until the
    /// workers' deletions bring it down; everything else goes on.
    #[error(
        "storage is nearly full ({used_percent}% of Redis's maxmemory; new jobs are refused past {high_water_percent}%); retry later"
    )]
    StorageFull { used_percent: u64, high_water_percent: u64 },
    /// 429 — the jobs would take the tenant past a quota; the text gives the
    /// figures, and `retry_after` (seconds) when the quota renews at a known time.
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after: Option<u64> },
    /// 422 — `EMAIL_ALLOWED_DOMAINS` is set and a recipient's domain is not in it.
    #[error("mail to `{domain}` is not allowed here (EMAIL_ALLOWED_DOMAINS)")]
    RecipientNotAllowed { field: String, domain: String },
    /// 429 — the tenant's submission rate limit; retry after this many seconds.
    #[error("too many jobs submitted; retry in {0} s")]
    RateLimited(u64),
    /// 503 (the instance is full, `WS_MAX_CONNECTIONS`) or 429 (the tenant is,
    /// `WS_MAX_PER_TENANT`) — no room for another event connection.
    #[error("{message}")]
    TooManyConnections { message: String, per_tenant: bool },
    /// 429 — the tenant already has `EVENTS_REPLAYS_PER_TENANT` replays (`since`) running.
    #[error("{0} replays with `since` are running for this tenant (EVENTS_REPLAYS_PER_TENANT); retry shortly")]
    TooManyReplays(usize),
    /// 503 — Redis is unreachable or refused the call; nothing was written. Safe to retry.
    #[error("storage is unavailable; nothing was stored, retry shortly")]
    Unavailable,
    /// 503 — a write reached Redis but its reply did not come back: it may or may
    /// not have taken effect. The text says how to retry safely.
    #[error("storage stopped answering after the request reached it, so it may or may not have taken effect; {0}")]
    OutcomeUnknown(&'static str),
    /// 503 — the job is stored, but not yet on the replicas (or disk) the API
    /// waits for: it will run unless Redis fails over before it is copied.
    #[error(
        "the job is stored, but {0}; it will run unless Redis fails over first. Retrying with the same Idempotency-Key is safe (it answers with the job); retrying without one may create a duplicate"
    )]
    NotReplicated(String),
    /// 500 — anything else; details are logged, not shown.
    #[error("internal error")]
    Internal(String),
}

/// An error body (RFC 9457 problem details), `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
    "code": "validation_failed", "message": "invalid type: string \"long\", expected u64", "field": "payload.ms"}))]
pub struct Problem<'a> {
    /// Always `about:blank`: `code` tells the errors apart.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The status's reason phrase.
    title: &'a str,
    /// The HTTP status, repeated.
    status: u16,
    /// What clients switch on: `malformed_json`, `bad_parameter`, `validation_failed`,
    /// `unknown_type`, `queue_not_allowed`, `too_many_queues`, `recipient_not_allowed`, `idempotency_key_reused`, `payload_too_large`, `unsupported_media_type`,
    /// `not_found`, `method_not_allowed`, `invalid_state`, `unauthorized`, `forbidden`, `upgrade_required`,
    /// `rate_limited`, `quota_exceeded`, `too_many_connections`, `too_many_replays`, `storage_full`, `unavailable`, `outcome_unknown`, `not_replicated` or `internal`.
    code: &'static str,
    /// For people; may change wording.
    message: String,
    /// The field, header or query parameter to blame, as a path such as `jobs[7].payload.ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<&'a str>,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. }
            | Self::UnknownType(_)
            | Self::IdempotencyKeyReused
            | Self::QueueNotAllowed { .. }
            | Self::RecipientNotAllowed { .. }
            | Self::TooManyQueues(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) | Self::PayloadOverLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::JobNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidState { .. } => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::RateLimited(_)
            | Self::QuotaExceeded { .. }
            | Self::TooManyReplays(_)
            | Self::TooManyConnections { per_tenant: true, .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooManyConnections { per_tenant: false, .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable | Self::OutcomeUnknown(_) | Self::NotReplicated(_) | Self::StorageFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::BadParameter { .. } => "bad_parameter",
            Self::Invalid { .. } => "validation_failed",
            Self::UnknownType(_) => "unknown_type",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::QueueNotAllowed { .. } => "queue_not_allowed",
            Self::RecipientNotAllowed { .. } => "recipient_not_allowed",
            Self::TooManyQueues(_) => "too_many_queues",
            Self::PayloadTooLarge(_) | Self::PayloadOverLimit { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::JobNotFound(_) | Self::RouteNotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::InvalidState { .. } => "invalid_state",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::UpgradeRequired => "upgrade_required",
            Self::RateLimited(_) => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::TooManyReplays(_) => "too_many_replays",
            Self::Unavailable => "unavailable",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::NotReplicated(_) => "not_replicated",
            Self::StorageFull { .. } => "storage_full",
            Self::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. }
            | Self::BadParameter { field, .. }
            | Self::QueueNotAllowed { field, .. }
            | Self::RecipientNotAllowed { field, .. }
            | Self::PayloadOverLimit { field, .. } => Some(field),
            _ => None,
        }
    }

    /// 429, with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self::RateLimited(retry_after_ms.div_ceil(1000).max(1))
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            code: self.code(),
            message: self.to_string(),
            field: self.field(),
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::Unavailable | Self::OutcomeUnknown(_) | Self::NotReplicated(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::StorageFull { .. } | Self::TooManyConnections { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::TooManyReplays(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited(seconds) | Self::QuotaExceeded { retry_after: Some(seconds), .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            _ => {}
        }
        response
    }
}

/// What to tell a client whose submission's fate is unknown.
pub const RETRY_SUBMISSION: &str = "retrying with the same Idempotency-Key is safe (it answers with the job if it was \
     stored); retrying without one may create a duplicate";

/// What to tell a client whose cancel or retry's fate is unknown.
pub const RETRY_CHANGE: &str = "read the job to see, then retry if it is needed";

/// For reads: a lost reply changed nothing.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "redis unavailable");
            Self::Unavailable
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl ApiError {
    /// What a refused enqueue says.
    pub fn quota(quota: shared::store::Quota, used: u64, cap: u64) -> Self {
        use shared::store::Quota;
        let message = match quota {
            Quota::LiveJobs => format!(
                "this tenant has {used} live jobs and may have {cap} (TENANT_MAX_LIVE_JOBS); wait for some to finish"
            ),
            Quota::Bytes => format!(
                "this tenant stores {used} bytes of jobs and may store {cap} (TENANT_MAX_BYTES); wait for finished ones to expire"
            ),
            Quota::EmailRecipients { .. } => format!(
                "this tenant's email.send jobs addressed {used} recipients today and may address {cap} a day \
                 (EMAIL_DAILY_RECIPIENTS); the count starts again at midnight UTC"
            ),
        };
        let retry_after = match quota {
            Quota::EmailRecipients { renews_in_ms } => Some(renews_in_ms.div_ceil(1000).max(1)),
            Quota::LiveJobs | Quota::Bytes => None,
        };
        Self::QuotaExceeded { message, retry_after }
    }

    /// For writes: a lost reply is an unknown outcome, with `advice` on retrying.
    pub fn from_write(err: StoreError, advice: &'static str) -> Self {
        if let StoreError::NotDurable { replicas, wanted, aof } = err {
            tracing::warn!(replicas, wanted, "a new job was not confirmed on its replicas in time");
            Self::NotReplicated(format!("only {replicas} of the {wanted} replicas confirmed it within the wait{aof}"))
        } else if matches!(&err, StoreError::Unavailable(e) if e.code() == Some("OOM")) {
            // Redis itself refused: it is full, past any high-water mark.
            Self::StorageFull { used_percent: 100, high_water_percent: 100 }
        } else if err.is_outcome_unknown() {
            tracing::warn!(error = %err, "redis reply lost after a write was sent");
            Self::OutcomeUnknown(advice)
        } else {
            Self::from(err)
        }
    }
}

impl ApiError {
    /// Maps a body-reading failure, keeping the 413 the body limit produces.
    pub fn from_body(rejection: BytesRejection, limit: u64) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(limit)
        } else {
            Self::MalformedJson(rejection.body_text())
        }
    }
}
