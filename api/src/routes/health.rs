//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// `GET /healthz` — the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz` — Redis answers and its schema is the one this binary expects.
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
