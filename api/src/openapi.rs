//! The OpenAPI 3.1 document, served at `GET /openapi.json`, and Swagger UI at
//! `/docs`. The document is generated from the handlers' `#[utoipa::path]`
//! attributes and the `ToSchema` derives on the types they read and write, so
//! the contract is written next to the code that implements it.
//!
//! Swagger UI is compiled into the binary (`utoipa-swagger-ui`'s `vendored`
//! feature): the docs page loads nothing from another host.

use axum::Router;
use serde_json::json;
use shared::jobs::Registry;
use shared::model::{HistoryEntry, JobRecord, JobStatus};
use shared::store::{JobPage, QueueStats, WorkerInfo};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::{PROBLEM_JSON, Problem};
use crate::events;
use crate::routes::{health, jobs, queues};
use crate::submit::{BatchRequest, JobRequest};

/// Where the document is served.
pub const SPEC_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (`/docs` redirects to `/docs/`).
pub const DOCS_PATH: &str = "/docs";

const DESCRIPTION: &str = "\
A durable job queue: submit jobs over HTTP, workers run them from Redis with retries, \
timeouts, scheduling and cancellation.

- Request bodies are `application/json` (or sent without a `Content-Type`).
- `POST` routes that create jobs accept an `Idempotency-Key` header.
- Every error is `application/problem+json` (the `Problem` schema); clients switch on its `code`.
- Every `/v1` route needs `Authorization: Bearer <JWT>` with claims `sub`, `tenant`, `scope` \
(space-separated `jobs:write`, `jobs:read`, `email:send`, `admin`) and `exp`: 401 without a valid token, 403 \
without the scope. Records, listings, counts, events and idempotency keys belong to the token's \
tenant; another tenant's job is 404 everywhere.
- Job submission is rate-limited per tenant (a job costs a token, or one per 4 KiB it stores if that is \
more; a batch costs its jobs'): 429 with `Retry-After`.
- Each job type's payload schema is `Payload.<type>`; `TypedJobRequest` is the request, one schema per `type`.";

#[derive(OpenApi)]
#[openapi(
    modifiers(&Authentication),
    info(title = "durable-jobs", version = env!("CARGO_PKG_VERSION"), description = DESCRIPTION),
    paths(
        jobs::create_job,
        jobs::list_jobs,
        jobs::create_batch,
        jobs::get_job,
        jobs::get_job_events,
        jobs::cancel_job,
        jobs::retry_job,
        queues::list_queues,
        queues::retry_failed,
        events::get_events,
        health::healthz,
        health::readyz,
    ),
    components(schemas(
        JobRequest,
        BatchRequest,
        JobRecord,
        JobStatus,
        HistoryEntry,
        JobPage,
        BatchAccepted,
        JobEvents,
        RetriedFailed,
        QueueStats,
        WorkerInfo,
        QueuesOverview,
        Health,
        Readiness,
        Problem,
    )),
    tags(
        (name = "jobs", description = "Submit, read, list, cancel and retry jobs."),
        (name = "queues", description = "Queue counts and live workers."),
        (name = "events", description = "Live job status over WebSocket or Server-Sent Events."),
        (name = "health", description = "Liveness and readiness probes."),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json` and Swagger UI under `/docs`, for the job types of `registry`.
pub fn router<S: Clone + Send + Sync + 'static>(registry: &Registry) -> Router<S> {
    // `validator_url("none")`: Swagger UI would otherwise fetch a badge from swagger.io.
    let config = Config::new([SPEC_PATH]).validator_url("none");
    SwaggerUi::new(DOCS_PATH).external_url_unchecked(SPEC_PATH, document(registry)).config(config).into()
}

/// The document: [`ApiDoc`], with the job requests typed by the registry. Each
/// type's payload schema is `Payload.<type>`, its request `JobRequest.<type>`
/// (the common fields, `type` fixed to its name, `payload` that schema), and
/// `POST /v1/jobs` and each job of a batch take `TypedJobRequest`: one of them,
/// told apart by `type`, so a client generated from the document gets typed payloads.
pub fn document(registry: &Registry) -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let schemas = &mut document["components"]["schemas"];
    let (mut variants, mut mapping) = (Vec::new(), serde_json::Map::new());
    for (kind, payload) in registry.payload_schemas() {
        let (payload_name, request_name) = (format!("Payload.{kind}"), format!("JobRequest.{kind}"));
        schemas[&payload_name] = payload;
        schemas[&request_name] = json!({
            "description": format!("A `{kind}` job."),
            "allOf": [schema("JobRequest"), {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"const": kind}, "payload": schema(&payload_name)},
            }],
        });
        variants.push(schema(&request_name));
        mapping.insert(kind.to_owned(), json!(format!("#/components/schemas/{request_name}")));
    }
    schemas["TypedJobRequest"] = json!({
        "description": "A job of one of the types this deployment knows, told apart by `type`.",
        "oneOf": variants,
        "discriminator": {"propertyName": "type", "mapping": mapping},
    });
    schemas["BatchRequest"]["properties"]["jobs"]["items"] = schema("TypedJobRequest");
    document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
        schema("TypedJobRequest");
    document
}

// Bodies the handlers build with `json!`, described here for the document
// (`worker/tests/openapi.rs` checks real answers against them).

/// `POST /v1/jobs/batch` answer.
#[derive(ToSchema)]
pub struct BatchAccepted {
    /// The new (or replayed) job ids, in request order.
    pub ids: Vec<String>,
}

/// `GET /v1/jobs/{id}/events` answer.
#[derive(ToSchema)]
pub struct JobEvents {
    pub job_id: String,
    /// The last 50 transitions, oldest first.
    pub events: Vec<HistoryEntry>,
    /// Older transitions no longer kept.
    pub dropped: u64,
}

/// `GET /v1/queues` answer.
#[derive(ToSchema)]
pub struct QueuesOverview {
    pub queues: Vec<QueueStats>,
    /// Workers that sent a heartbeat within the last 3 leases (`admin` tokens only).
    pub workers: Option<Vec<WorkerInfo>>,
}

/// `POST /v1/queues/{queue}/retry-failed` answer.
#[derive(ToSchema)]
pub struct RetriedFailed {
    pub queue: String,
    /// Failed jobs queued again by this request.
    pub retried: u64,
    /// True when failed jobs may remain: call again.
    pub more: bool,
}

/// `GET /healthz` answer.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Declares the bearer scheme, and on every `/v1` operation the token it needs
/// and the 401 and 403 answers (429 too where jobs are submitted).
struct Authentication;

impl Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
        let problem = |description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
            ResponseBuilder::new().description(description).content(PROBLEM_JSON, content).build()
        };
        for (path, item) in openapi.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/v1/")) {
            let submits = path == "/v1/jobs" || path == "/v1/jobs/batch";
            for (method, operation) in [("get", item.get.as_mut()), ("post", item.post.as_mut())] {
                let Some(operation) = operation else { continue };
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses
                    .insert("401".into(), problem("`unauthorized`: no token, or one that does not verify.").into());
                responses.insert("403".into(), problem("`forbidden`: the token lacks the scope.").into());
                if submits && method == "post" {
                    responses.insert(
                        "429".into(),
                        problem("`rate_limited`: the tenant's submission limit; retry after `Retry-After` s.").into(),
                    );
                }
            }
        }
    }
}

/// `GET /readyz` answer.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `unavailable` when not ready.
    #[schema(nullable = false)]
    pub code: Option<String>,
    /// Why it is not ready.
    #[schema(nullable = false)]
    pub message: Option<String>,
}
