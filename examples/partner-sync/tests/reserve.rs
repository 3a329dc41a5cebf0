//! The example deployment as its users run it: its own binary as the API and a
//! worker (real processes), a real Redis, and a partner's HTTP server started
//! here. Jobs go in over HTTP; the side effect is what the partner receives.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use shared::testkit::{RedisServer, free_port};

const SECRET: &str = "an example secret of at least thirty-two bytes";

/// What the partner was asked: (idempotency key, sku, quantity), in order.
type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;

/// The partner: answers 503 to the first request for `FLAKY-1`, 201 to the rest.
async fn partner() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let reserve = |State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
        let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok()).unwrap_or("").to_owned();
        let sku = body["sku"].as_str().unwrap_or("").to_owned();
        let mut seen = seen.lock().unwrap();
        let first = !seen.iter().any(|(_, s, _)| *s == sku);
        seen.push((key, sku.clone(), body["quantity"].as_u64().unwrap_or(0)));
        if sku == "FLAKY-1" && first {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "busy"})));
        }
        (StatusCode::CREATED, Json(json!({"id": format!("r-{}", seen.len())})))
    };
    let app = axum::Router::new().route("/reservations", axum::routing::post(reserve)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(role: &str, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_partner-sync"));
    command.arg(role).env("JWT_SECRET", SECRET).env("RUST_LOG", "warn").stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_deployments_own_job_reaches_the_partner_once_per_job_through_its_injected_client() {
    let redis = RedisServer::start();
    let (partner_url, seen) = partner().await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let base = format!("http://{bind}");
    let common = [("REDIS_URL", redis.url()), ("REDIS_PREFIX", "example".to_owned())];
    let env = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        common.iter().cloned().chain(extra.iter().cloned()).collect()
    };
    let api_env = env(&[("BIND_ADDR", bind.clone())]);
    let _api = Process(binary("api", &api_env).stdout(Stdio::null()).spawn().expect("api starts"));

    // The binary's own command line mints the token.
    let output = binary("api", &[])
        .args(["token", "--tenant", "acme", "--scope", "jobs:write jobs:read", "--ttl", "1h"])
        .output()
        .expect("token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let post = async |body: Value| {
        let response = http.post(format!("{base}/v1/jobs")).bearer_auth(&token).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    wait_for("the api", async || {
        let response = reqwest::get(format!("{base}/readyz")).await.ok()?;
        response.status().is_success().then_some(Value::Null)
    })
    .await;

    // The API checks the type's payload before storing anything.
    let (status, error) = post(json!({"type": "partner.reserve", "payload": {"sku": "BOLT-M8", "quantity": 0}})).await;
    assert_eq!((status, error["field"].as_str()), (422, Some("payload.quantity")), "{error}");
    let (status, error) = post(json!({"type": "partner.reserve", "payload": {"sku": "bolt m8", "quantity": 1}})).await;
    assert_eq!((status, error["field"].as_str()), (422, Some("payload.sku")), "{error}");

    let (status, bolt) = post(json!({"type": "partner.reserve", "payload": {"sku": "BOLT-M8", "quantity": 40}})).await;
    assert_eq!(status, 202, "{bolt}");
    assert_eq!(bolt["queue"], "partner", "the type's own defaults");
    let (_, flaky) =
        post(json!({"type": "partner.reserve", "payload": {"sku": "FLAKY-1", "quantity": 2}, "backoff_base_ms": 1}))
            .await;

    // A worker without its client refuses to start, saying what is missing.
    let output = binary("worker", &env(&[])).output().expect("worker runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PARTNER_URL"));

    let worker_env = env(&[("PARTNER_URL", partner_url)]);
    let _worker = Process(binary("worker", &worker_env).stdout(Stdio::null()).spawn().expect("worker starts"));
    for (job, attempts) in [(&bolt, 1), (&flaky, 2)] {
        let id = job["id"].as_str().unwrap().to_owned();
        let record = wait_for("the job to succeed", async || {
            let response = http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(&token).send().await.ok()?;
            let record: Value = response.json().await.ok()?;
            (record["status"] == "succeeded").then_some(record)
        })
        .await;
        assert_eq!(record["attempts"], attempts, "{record}");
        assert!(record["result"]["reservation"].is_string(), "{record}");
    }
    let seen = seen.lock().unwrap().clone();
    let keys = |sku: &str| seen.iter().filter(|(_, s, _)| s == sku).map(|(k, _, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys("BOLT-M8"), [bolt["id"].as_str().unwrap()], "{seen:?}");
    assert_eq!(keys("FLAKY-1"), [flaky["id"].as_str().unwrap(); 2], "retried with the same key: {seen:?}");
}
