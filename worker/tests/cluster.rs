//! Redis Cluster readiness: every script touches only the deployment's hash-tag
//! slot, so the whole system runs against the cluster node that owns that slot.
//! A script reaching for a key in any other slot would fail there.

use std::process::{Child, Command, Stdio};
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::testkit::free_port;

/// A three-master cluster of our own `redis-server` processes.
struct Cluster {
    nodes: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir"])
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            nodes.push((port, child));
        }
        let cluster = Self { nodes, _dir: dir };
        for (port, _) in &cluster.nodes {
            wait(Duration::from_secs(10), || cli(*port, &["PING"]).contains("PONG"));
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        for (port, _) in &cluster.nodes {
            wait(Duration::from_secs(20), || cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
        }
        cluster
    }

    /// The port of the node that serves `key`'s slot (the others answer MOVED).
    fn owner(&self, key: &str) -> u16 {
        let (port, _) = self
            .nodes
            .iter()
            .find(|(port, _)| !cli(*port, &["GET", key]).starts_with("MOVED"))
            .expect("a node serves the slot");
        *port
    }
}

fn wait(within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_whole_system_runs_on_the_cluster_node_that_owns_its_slot() {
    shared::telemetry::init(shared::config::LogFormat::Text);
    let cluster = Cluster::start();
    let prefix = "cl";
    let port = cluster.owner(&format!("{{{prefix}}}"));
    let url = format!("redis://127.0.0.1:{port}");

    let api_config = support::api_config(&url, prefix);
    let router = api::build(&api_config).await.expect("the API sets up on a cluster node");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, router, std::future::pending()));

    let mut worker_config = worker::config::WorkerConfig::defaults();
    worker_config.demo.demo_jobs = Some(true);
    worker_config.redis.redis_url = url;
    worker_config.redis.redis_prefix = prefix.into();
    worker_config.lease_secs = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(worker_config, async move {
        let _ = stopped.await;
    }));

    let http = support::client_for(&support::token(support::TENANT, "jobs:write jobs:read", Duration::from_secs(600)));
    let post = |path: &str, body: Value, key: Option<&str>| {
        let mut request = http.post(format!("{base}{path}")).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Every script: enqueue (single, idempotent, batch, scheduled), claim, ack with a
    // retry, heartbeat, reap, cancel, retry by request, read.
    let (status, single) = post("/v1/jobs", json!({"type": "noop"}), Some("once")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{single}");
    let (status, _) = post("/v1/jobs", json!({"type": "noop"}), Some("once")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, batch) = post(
        "/v1/jobs/batch",
        json!({"jobs": [
            {"type": "fail", "payload": {"times": 1}, "backoff_base_ms": 10, "backoff_cap_ms": 10},
            {"type": "noop", "delay_ms": 300}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let (_, parked) = post("/v1/jobs", json!({"type": "noop", "delay_ms": 60_000}), None).await;
    let parked = parked["id"].as_str().unwrap().to_owned();
    let (status, _) = post(&format!("/v1/jobs/{parked}/cancel"), json!({}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(&format!("/v1/jobs/{parked}/retry"), json!({}), None).await;
    assert_eq!(status, StatusCode::OK);

    let mut ids: Vec<String> =
        batch["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    ids.push(single["id"].as_str().unwrap().to_owned());
    ids.push(parked);
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let record: Value = http.get(format!("{base}/v1/jobs/{id}")).send().await.unwrap().json().await.unwrap();
            if record["status"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} stuck: {record}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, queues) = {
        let response = http.get(format!("{base}/v1/queues")).send().await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK, "{queues}");
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    drop(cluster);
}
