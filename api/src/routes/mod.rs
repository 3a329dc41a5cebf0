//! The HTTP routes, one file per resource, and the router that stacks them.

pub mod dashboard;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod queues;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shared::store::Payloads;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Backstop for a request that hangs: Redis calls time out well before this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes as usize;
    let v1 = Router::new()
        .route("/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/jobs/batch", post(jobs::create_batch))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/events", get(jobs::get_job_events))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/jobs/{id}/retry", post(jobs::retry_job))
        .route("/queues", get(queues::list_queues))
        .route("/queues/{queue}/retry-failed", post(queues::retry_failed))
        .route("/events", get(crate::events::get_events))
        .fallback(jobs::not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/v1", v1)
        .route("/", get(dashboard::get_dashboard))
        .route("/assets/{file}", get(dashboard::get_asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::get_metrics))
        .merge(crate::openapi::router(&state.rules.registry))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(bound_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let path =
                        request.extensions().get::<MatchedPath>().map_or(request.uri().path(), MatchedPath::as_str);
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path, request_id = id)
                }))
                .layer(axum::middleware::from_fn(request_timeout))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// Longest `X-Request-Id` a client may choose; a longer or odd one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `X-Request-Id` that is too long or holds more than
/// `[A-Za-z0-9._:-]`: it goes into every log line of the request.
async fn bound_request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let fits = |value: &axum::http::HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if request.headers().get(REQUEST_ID).is_some_and(|value| !fits(value)) {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// Backstop for a request that hangs (Redis calls time out well before this):
/// answers 503 `unavailable` like any other outage.
async fn request_timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("request timed out");
            ApiError::Unavailable.into_response()
        }
    }
}

/// Reads a `limit` query parameter: absent = `default`, else a number from 1 to `max`.
pub(crate) fn limit_param(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(text) => text.parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| ApiError::BadParameter {
            field: "limit".into(),
            message: format!("a number from 1 to {max}"),
        }),
    }
}

/// Reads an `include` query parameter: `payload` (the only thing that can be
/// included) or nothing.
pub(crate) fn include_param(raw: Option<&str>) -> Result<Payloads, ApiError> {
    match raw {
        None | Some("") => Ok(Payloads::Omit),
        Some("payload") => Ok(Payloads::Include),
        Some(_) => {
            Err(ApiError::BadParameter { field: "include".into(), message: "only `payload` can be included".into() })
        }
    }
}

/// A known route with another method answers in the same JSON shape as every error.
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
