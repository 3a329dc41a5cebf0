//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
use crate::openapi::{Health, Readiness};

/// `GET /healthz` — the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = Health, example = json!({"status": "ok"})))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz` — Redis answers and its schema is the one this binary expects.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "Redis answers with the expected schema version.", body = Readiness,
            example = json!({"status": "ready"})),
        (status = 503, description = "Not ready; `message` says why (Redis not reached since start-up, \
            unreachable, or a schema mismatch).", body = Readiness,
            example = json!({"status": "not_ready", "code": "unavailable", "message": "redis not reachable yet: …"})),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let checked = match state.store() {
        Ok(store) => {
            let mut conn = store.connection();
            shared::migrate::check(&mut conn, store.keys()).await.map_err(|err| err.to_string())
        }
        Err(_) => Err(state.startup_problem()),
    };
    match checked {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "code": "unavailable", "message": message })),
        ),
    }
}
