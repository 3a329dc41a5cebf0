//! `GET /v1/queues`: counts per queue and the live workers.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::openapi::QueuesOverview;

/// `GET /v1/queues` — per-queue counts and the workers that sent a heartbeat recently.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    summary = "Queue counts and live workers",
    responses(
        (status = 200, description = "Counts per queue; workers seen within the last 3 leases.",
            body = QueuesOverview),
        (status = 503, description = "`unavailable`", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub async fn list_queues(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queues = state.store()?.queue_stats().await?;
    let workers = state.store()?.workers().await?;
    Ok(Json(json!({ "queues": queues, "workers": workers })))
}
