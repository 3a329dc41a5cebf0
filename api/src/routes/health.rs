//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use shared::error::StoreError;

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
    // Ready or not, and why in general terms: the details (addresses, Redis's own
    // error texts) go to the log, not to whoever asks without a token.
    let checked = match state.store() {
        Ok(store) => {
            let mut conn = store.connection();
            shared::migrate::check(&mut conn, store.keys()).await.map_err(|err| {
                tracing::warn!(error = %err, "not ready");
                match err {
                    StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) => "redis is not reachable",
                    StoreError::SchemaTooNew { .. } | StoreError::SchemaBehind { .. } => {
                        "the redis schema is not the one this version needs"
                    }
                    _ => "redis answered with an error",
                }
                .to_owned()
            })
        }
        Err(_) => {
            tracing::warn!(problem = %state.startup_problem(), "not ready");
            Err("not connected to redis yet".to_owned())
        }
    };
    match checked {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "code": "unavailable", "message": message })),
        ),
    }
}
