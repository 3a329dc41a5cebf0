//! The API documentation: `/openapi.json` lists every route and the answers
//! match their schemas; Swagger UI at `/docs` is served entirely by the API,
//! with nothing loaded from another host.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::System;

/// Every route the router serves, as (path template, method).
const ROUTES: [(&str, &str); 12] = [
    ("/v1/jobs", "post"),
    ("/v1/jobs", "get"),
    ("/v1/jobs/batch", "post"),
    ("/v1/jobs/{id}", "get"),
    ("/v1/jobs/{id}/events", "get"),
    ("/v1/jobs/{id}/cancel", "post"),
    ("/v1/jobs/{id}/retry", "post"),
    ("/v1/queues", "get"),
    ("/v1/queues/{queue}/retry-failed", "post"),
    ("/v1/events", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
];

async fn spec(system: &System) -> Value {
    let (status, spec) = system.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    spec
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The component a `$ref` points at.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &spec["components"]["schemas"][name],
        None => schema,
    }
}

/// Checks that `value` has every required property of `schema`, and no property
/// it does not declare, down through referenced objects and arrays of them.
fn assert_conforms(spec: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(spec, schema);
    if let (Some(items), Some(elements)) = (schema.get("items"), value.as_array()) {
        for (index, element) in elements.iter().enumerate() {
            assert_conforms(spec, items, element, &format!("{at}[{index}]"));
        }
    }
    let Some(properties) = schema.get("properties") else { return };
    let (declared, present) = (keys(properties), keys(value));
    assert!(present.is_subset(&declared), "{at}: undeclared {:?} in {value}", &present - &declared);
    let required = strings(&schema["required"]);
    assert!(required.is_subset(&present), "{at}: missing {:?} in {value}", &required - &present);
    for key in &present {
        if !value[key].is_null() {
            assert_conforms(spec, &properties[key], &value[key], &format!("{at}.{key}"));
        }
    }
}

#[tokio::test]
async fn the_spec_is_openapi_3_1_and_lists_every_route_the_router_serves() {
    let system = System::start().await;
    let spec = spec(&system).await;
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", spec["openapi"]);
    assert_eq!(spec["info"]["title"], "durable-jobs");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));

    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| keys(item).into_iter().map(move |method| (path.clone(), method)))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    assert_eq!(documented, served);

    // And each documented operation is routed: an unrouted one would answer 405 or "no route".
    for (path, method) in &ROUTES {
        let url = system.url(&path.replace("{id}", "00000000-0000-0000-0000-000000000000"));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = system.http.request(method.clone(), url).send().await.expect("request sent");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!body["message"].as_str().unwrap_or("").starts_with("no route"), "{method} {path}: {body}");
    }

    let submit = &spec["paths"]["/v1/jobs"]["post"];
    for status in ["202", "400", "401", "403", "413", "415", "422", "429", "503"] {
        assert!(submit["responses"].get(status).is_some(), "POST /v1/jobs lacks {status}");
    }
    assert_eq!(
        submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/JobRecord"
    );
    assert_eq!(
        submit["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert_eq!(
        submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/TypedJobRequest"
    );
    for path in ["/v1/jobs", "/v1/jobs/batch"] {
        let parameters = &spec["paths"][path]["post"]["parameters"];
        let header = parameters.as_array().into_iter().flatten().find(|p| p["name"] == "Idempotency-Key");
        assert_eq!(header.map(|h| &h["in"]), Some(&json!("header")), "POST {path}: {parameters}");
    }
    let list: BTreeSet<String> = spec["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(list, ["cursor", "include", "limit", "queue", "status", "type"].map(String::from).into());
    let cancel = keys(&spec["paths"]["/v1/jobs/{id}/cancel"]["post"]["responses"]);
    assert_eq!(cancel, ["200", "202", "401", "403", "404", "409", "503"].map(String::from).into());
    // Every /v1 operation names the bearer scheme; the probes do not.
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation["security"] == json!([{"bearer": []}]);
            assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}");
        }
    }

    let request = &spec["components"]["schemas"]["JobRequest"]["properties"];
    assert_eq!(
        (request["max_attempts"]["minimum"].as_u64(), request["max_attempts"]["maximum"].as_u64()),
        (Some(1), Some(100))
    );
    assert_eq!(request["timeout_ms"]["maximum"].as_u64(), Some(86_400_000));
    let batch = &spec["components"]["schemas"]["BatchRequest"]["properties"]["jobs"];
    assert_eq!((batch["minItems"].as_u64(), batch["maxItems"].as_u64()), (Some(1), Some(1000)));
    let payload = request["payload"]["description"].as_str().unwrap_or("");
    for kind in ["email.send", "noop", "sleep", "fail"] {
        assert!(payload.contains(&format!("`{kind}`")), "payload description lacks {kind}: {payload}");
    }
}

#[tokio::test]
async fn a_record_has_exactly_the_properties_its_schema_declares() {
    let system = System::start().await;
    let spec = spec(&system).await;
    let record_schema = &spec["components"]["schemas"]["JobRecord"];
    let declared = keys(&record_schema["properties"]);
    // Every record field is always sent, but for the payload, which listings and
    // snapshots leave out unless asked.
    let mut always = declared.clone();
    assert!(always.remove("payload"), "{declared:?}");
    assert_eq!(strings(&record_schema["required"]), always, "every other record field is always sent");

    let queued = system.submit(json!({"type": "noop"})).await;
    assert_eq!(keys(&system.job(&queued).await), declared);

    // A finished job (every timestamp and the result set) has the same keys.
    let worker = system.spawn_worker();
    let done = system.submit(json!({"type": "fail", "payload": {"times": 1}, "backoff_base_ms": 1})).await;
    let record = system.wait_for_status(&done, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(keys(&record), declared);
    assert!(record["finished_at"].is_string() && record["last_error"].is_string(), "{record}");

    // The other answers match their schemas too.
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    assert_conforms(&spec, &schema("JobEvents"), &system.get(&format!("/v1/jobs/{done}/events")).await.1, "events");
    let (_, page) = system.get("/v1/jobs?limit=1").await;
    assert_eq!(keys(&page["jobs"][0]), always, "a listed record has all but the payload");
    assert_conforms(&spec, &schema("JobPage"), &page, "page");
    let (_, page) = system.get("/v1/jobs?limit=1&include=payload").await;
    assert_eq!(keys(&page["jobs"][0]), declared, "asked, it has the payload too");
    assert_conforms(&spec, &schema("JobPage"), &page, "page with payloads");
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": [{"type": "noop"}]}), &[]).await;
    assert_conforms(&spec, &schema("BatchAccepted"), &batch, "batch");
    let queues = support::eventually(Duration::from_secs(5), "a worker heartbeat", || async {
        let (_, body) = system.get_admin("/v1/queues").await;
        body["workers"].as_array().is_some_and(|w| !w.is_empty()).then_some(body)
    })
    .await;
    assert_conforms(&spec, &schema("QueuesOverview"), &queues, "queues");
    let (_, retried, _) = system.post("/v1/queues/default/retry-failed", &json!({}), &[]).await;
    assert_conforms(&spec, &schema("RetriedFailed"), &retried, "retry-failed");
    assert_conforms(&spec, &schema("Health"), &system.get("/healthz").await.1, "healthz");
    assert_conforms(&spec, &schema("Readiness"), &system.get("/readyz").await.1, "readyz");
    let (status, problem) = system.get("/v1/jobs?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_conforms(&spec, &schema("Problem"), &problem, "problem");
    assert!(problem["field"].is_string(), "{problem}");
    worker.shutdown().await.expect("worker stops");
}

/// Values of `attribute="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let marker = format!("{attribute}=\"");
    html.split(marker.as_str()).skip(1).filter_map(|rest| rest.split('"').next()).collect()
}

fn has_absolute_url(text: &str) -> bool {
    text.contains("http://") || text.contains("https://")
}

#[tokio::test]
async fn the_docs_page_and_every_asset_it_loads_are_served_by_the_api_itself() {
    let system = System::start().await;
    let response = system.http.get(system.url("/docs")).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.url().path().ends_with("/docs/"), "redirected to {}", response.url());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    assert!(!has_absolute_url(&html), "the page names another host: {html}");

    let assets: Vec<&str> = attribute_values(&html, "src").into_iter().chain(attribute_values(&html, "href")).collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")), "{assets:?}");
    for asset in assets {
        assert!(!asset.starts_with("//"), "{asset} is on another host");
        let url = system.url(&format!("/docs/{}", asset.trim_start_matches("./")));
        let response = system.http.get(&url).send().await.expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let body = response.text().await.unwrap_or_default();
        assert!(!body.is_empty(), "{url} is empty");
        if asset.ends_with(".css") {
            assert!(!body.contains("@import") && !body.contains("url(http"), "{asset} loads from another host");
        }
        if asset.ends_with("swagger-initializer.js") {
            assert!(!has_absolute_url(&body), "the UI config names another host: {body}");
            assert!(body.contains("\"url\": \"/openapi.json\""), "the UI does not load our spec: {body}");
            assert!(body.contains("\"validatorUrl\": \"none\""), "the UI would call swagger.io's validator: {body}");
        }
    }
}

#[tokio::test]
async fn every_registered_types_payloads_are_published_and_the_schema_agrees_with_the_api() {
    let system = System::start().await;
    let spec = spec(&system).await;
    let schemas = &spec["components"]["schemas"];
    for kind in ["email.send", "noop", "sleep", "fail"] {
        assert!(schemas[format!("Payload.{kind}")].is_object(), "no payload schema for {kind}");
        assert_eq!(
            schemas["TypedJobRequest"]["discriminator"]["mapping"][kind],
            format!("#/components/schemas/JobRequest.{kind}")
        );
    }
    let body = &spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["$ref"], "#/components/schemas/TypedJobRequest");
    assert_eq!(schemas["BatchRequest"]["properties"]["jobs"]["items"]["$ref"], "#/components/schemas/TypedJobRequest");

    // A JSON Schema validator over the published document, and the API itself,
    // agree on samples of every type: the good ones pass both, the bad ones neither.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/components/schemas/TypedJobRequest",
        "components": spec["components"],
    });
    let validator = jsonschema::validator_for(&root).expect("the published schemas compile");
    let parked = |job: Value| {
        let mut job = job;
        job["delay_ms"] = json!(3_600_000);
        job
    };
    let good = [
        json!({"type": "email.send", "payload": {"to": "ada@example.org", "subject": "Hi", "text": "Hello"}}),
        json!({"type": "email.send", "payload": {"to": ["a@example.org", "b@example.org"], "subject": "Hi",
            "text": "Hello", "html": "<p>Hello</p>"}}),
        json!({"type": "noop", "payload": {}}),
        json!({"type": "sleep", "payload": {"ms": 60_000}}),
        json!({"type": "fail", "payload": {"times": 2, "permanent": true}}),
    ];
    let bad = [
        json!({"type": "sleep", "payload": {"ms": 60_001}}),
        json!({"type": "sleep", "payload": {"ms": 10, "nap": true}}),
        json!({"type": "fail", "payload": {"times": 1001}}),
        json!({"type": "email.send", "payload": {"to": [], "subject": "Hi", "text": "Hello"}}),
        json!({"type": "email.send", "payload": {"to": "ada@example.org", "subject": "", "text": "Hello"}}),
        json!({"type": "email.send", "payload": {"to": "ada@example.org", "text": "Hello"}}),
        json!({"type": "teleport", "payload": {}}),
    ];
    for job in good {
        let errors: Vec<String> = validator.iter_errors(&job).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{job}: {errors:?}");
        let (status, body, _) = system.post("/v1/jobs", &parked(job.clone()), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}: {body}");
    }
    for job in bad {
        assert!(!validator.is_valid(&job), "the schema lets {job} through");
        let (status, body, _) = system.post("/v1/jobs", &parked(job.clone()), &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{job}: {body}");
    }
}
