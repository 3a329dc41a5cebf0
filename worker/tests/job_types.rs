//! A deployment's own job types: registered with the shipped ones, validated by
//! the API, run by the worker with the services their handlers read by type,
//! with the same retries as any job; and a worker missing a service a type
//! needs stops at start-up.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use shared::jobs::{JobContext, JobError, JobType, Needs, Registry, Services};
use support::System;

/// Where `ledger.append` writes: a stand-in for a database pool.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<(String, u32)>>>);

/// `ledger.append` — writes an entry; fails its first attempt when `flaky`.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Append {
    #[garde(length(min = 1, max = 32))]
    #[schema(min_length = 1, max_length = 32)]
    entry: String,
    #[serde(default)]
    #[garde(skip)]
    flaky: bool,
}

impl JobType for Append {
    const NAME: &'static str = "ledger.append";

    fn needs(needs: &mut Needs) {
        needs.service::<Ledger>();
    }

    async fn run(self, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        if self.flaky && ctx.attempt == 1 {
            return Err(JobError::Retryable("the ledger is busy".into()));
        }
        let ledger = ctx.get::<Ledger>()?;
        let mut entries = ledger.0.lock().unwrap();
        entries.push((self.entry, ctx.attempt));
        Ok(json!({ "entries": entries.len() }))
    }
}

fn registry() -> Registry {
    Registry::standard(false).register::<Append>()
}

/// An API over `registry()` on the system's Redis; returns its base URL.
async fn api(system: &System) -> String {
    let router = api::build_with(&system.api_config(), registry()).await.expect("api builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(api::serve(listener, router, std::future::pending()));
    base
}

#[tokio::test]
async fn a_deployments_own_type_is_validated_run_with_its_service_and_retried() {
    let system = System::start().await;
    let base = api(&system).await;
    let post = |body: serde_json::Value| {
        let (http, url) = (system.http.clone(), format!("{base}/v1/jobs"));
        async move {
            let response = http.post(url).json(&body).send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let (status, error) = post(json!({"type": "ledger.append", "payload": {"entry": ""}})).await;
    assert_eq!((status, error["field"].as_str()), (422, Some("payload.entry")), "{error}");
    let (status, error) = post(json!({"type": "noop"})).await;
    assert_eq!((status, error["code"].as_str()), (422, Some("unknown_type")), "not in this registry");

    let (_, plain) = post(json!({"type": "ledger.append", "payload": {"entry": "first"}})).await;
    let (_, flaky) =
        post(json!({"type": "ledger.append", "payload": {"entry": "second", "flaky": true}, "backoff_base_ms": 1}))
            .await;
    let ledger = Ledger::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let services = Services::new().with(ledger.clone());
    let worker = tokio::spawn(worker::run_with(system.worker_config(), registry(), services, async move {
        let _ = stopped.await;
    }));
    for (job, attempts) in [(&plain, 1), (&flaky, 2)] {
        let id = job["id"].as_str().expect("id");
        let record = system.wait_for_status(id, "succeeded", Duration::from_secs(10)).await;
        assert_eq!(record["attempts"], attempts, "{record}");
    }
    let mut entries = ledger.0.lock().unwrap().clone();
    entries.sort();
    assert_eq!(entries, [("first".to_owned(), 1), ("second".to_owned(), 2)]);
    let _ = stop.send(());
    worker.await.expect("joined").expect("drained");
}

#[tokio::test]
async fn a_worker_missing_a_service_its_types_need_stops_before_claiming() {
    let system = System::start().await;
    let base = api(&system).await;
    let response = system
        .http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"type": "ledger.append", "payload": {"entry": "kept"}}))
        .send()
        .await
        .expect("sent");
    let job: serde_json::Value = response.json().await.expect("json");
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        worker::run_with(system.worker_config(), registry(), Services::new(), std::future::pending()),
    )
    .await
    .expect("returns at once");
    let message = format!("{:#}", result.expect_err("refuses to start"));
    assert!(message.contains("ledger.append") && message.contains("Ledger"), "{message}");
    let record = system.job(job["id"].as_str().expect("id")).await;
    assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("queued"), Some(0)), "{record}");
}
