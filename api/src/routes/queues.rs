//! `GET /v1/queues`: counts per queue and the live workers.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

pub async fn list_queues(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queues = state.store()?.queue_stats().await?;
    let workers = state.store()?.workers().await?;
    Ok(Json(json!({ "queues": queues, "workers": workers })))
}
