//! The `jobs` binary, run as a process against a whole system started per test: a real
//! `redis-server`, the real API on 127.0.0.1 and, where jobs must run, a real worker, both
//! in-process. Nothing is mocked; the CLI sees only HTTP and the WebSocket.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::config::ApiConfig;
use serde_json::{Value, json};
use shared::testkit::RedisServer;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HS256 secret the test API verifies tokens with.
const TEST_SECRET: &str = "test secret, at least thirty-two bytes long";
/// The tenant every test acts for; also the API's operator tenant.
const TENANT: &str = "acme";
/// How long any one `jobs` run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn token(tenant: &str, scope: &str) -> String {
    let mut config = ApiConfig::defaults();
    config.auth.jwt_secret = Some(TEST_SECRET.to_owned().into());
    let request = api::auth::TokenRequest {
        tenant,
        subject: "test",
        scope,
        ttl: Duration::from_secs(3600),
        private_key_file: None,
    };
    api::auth::mint(&config.auth, &request).expect("token minted")
}

/// Redis, the API and optionally a worker, all stopped when the test ends.
struct System {
    redis: RedisServer,
    prefix: String,
    addr: SocketAddr,
    base: String,
    /// `jobs:write jobs:read` of [`TENANT`]: not an operator.
    token: String,
    /// `admin` of [`TENANT`], the API's `ADMIN_TENANT`: an operator.
    operator: String,
    http: reqwest::Client,
    api: Option<Running<std::io::Result<()>>>,
    worker: Option<Running<anyhow::Result<()>>>,
}

/// How one `jobs` run ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl System {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut ApiConfig)) -> Self {
        let redis = RedisServer::start();
        let mut system = Self {
            prefix: format!("jobs{}", std::process::id()),
            redis,
            addr: "127.0.0.1:0".parse().expect("addr"),
            base: String::new(),
            token: token(TENANT, "jobs:write jobs:read"),
            operator: token(TENANT, "admin"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client"),
            api: None,
            worker: None,
        };
        let mut config = system.api_config();
        tune(&mut config);
        system.serve(config).await;
        system
    }

    fn api_config(&self) -> ApiConfig {
        let mut config = ApiConfig::defaults();
        config.redis.redis_url = self.redis.url();
        config.redis.redis_prefix = self.prefix.clone();
        config.auth.jwt_secret = Some(TEST_SECRET.to_owned().into());
        config.auth.jwt_leeway_secs = 0;
        config.auth.admin_tenant = Some(TENANT.to_owned());
        config.demo.demo_jobs = Some(true);
        config.rate_limit.rate_limit_per_sec = 0;
        config
    }

    /// Serves the API on `self.addr` (a fresh port the first time, the same one after).
    async fn serve(&mut self, config: ApiConfig) {
        let (addr, api) = serve_api(&config, self.addr).await;
        self.addr = addr;
        self.base = format!("http://{addr}");
        self.api = Some(api);
    }

    /// Shuts the API down (its sockets get 1001) and waits until it has stopped.
    async fn stop_api(&mut self) {
        let (stop, task) = self.api.take().expect("the API runs");
        let _ = stop.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(15), task).await;
        stopped.expect("the API stops within 15 s").expect("api task").expect("api serve");
    }

    fn start_worker(&mut self) {
        let mut config = worker::config::WorkerConfig::defaults();
        config.redis.redis_url = self.redis.url();
        config.redis.redis_prefix = self.prefix.clone();
        config.lease_secs = 2;
        config.shutdown_grace_secs = 5;
        config.concurrency = 8;
        config.demo.demo_jobs = Some(true);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker::run(config, async move {
            let _ = stopped.await;
        }));
        self.worker = Some((stop, task));
    }

    async fn stop_worker(&mut self) {
        let (stop, task) = self.worker.take().expect("a worker runs");
        let _ = stop.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(15), task).await;
        stopped.expect("the worker stops within 15 s").expect("worker task").expect("worker run");
    }

    fn command(&self, token: &str, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobs"));
        command.args(args).env("JOBS_API", &self.base).env("JOBS_TOKEN", token).stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    /// Runs `jobs ARGS` with the tenant's token.
    async fn jobs(&self, args: &[&str]) -> Run {
        self.jobs_as(&self.token, args).await
    }

    async fn jobs_as(&self, token: &str, args: &[&str]) -> Run {
        let output = tokio::time::timeout(RUN_TIMEOUT, self.command(token, args).output())
            .await
            .unwrap_or_else(|_| panic!("jobs {args:?} did not finish within {RUN_TIMEOUT:?}"))
            .expect("jobs runs");
        Run {
            code: output.status.code().expect("jobs exited rather than being killed"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `jobs tail ARGS`, returned once it says it is subscribed.
    async fn tail(&self, args: &[&str]) -> Tail {
        let mut command = self.command(&self.token, &[&["tail"], args].concat());
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("jobs tail starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut tail = Tail { child, stdout, stderr };
        tail.stderr_until("subscribed", Duration::from_secs(10)).await;
        tail
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response =
            self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("get");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body);
        let response = request.send().await.expect("post");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, body: Value) -> String {
        self.submit_to(&self.base, body).await
    }

    /// Submits through the API at `base` (another instance on the same Redis).
    async fn submit_to(&self, base: &str, body: Value) -> String {
        let request = self.http.post(format!("{base}/v1/jobs")).bearer_auth(&self.token).json(&body);
        let response = request.send().await.expect("post");
        let status = response.status().as_u16();
        let record: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "submit {body}: {record}");
        record["id"].as_str().expect("id").to_owned()
    }

    async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, record) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(code, 200, "job {id}: {record}");
            if record["status"] == status {
                return record;
            }
            assert!(Instant::now() < deadline, "job {id} did not reach {status} within 20 s: {record}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every record of the tenant, payloads included, through every page.
    async fn all_jobs(&self) -> Vec<Value> {
        let (mut jobs, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let mut path = "/v1/jobs?limit=500&include=payload".to_owned();
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page}");
            jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return jobs,
            }
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.api.take() {
            let _ = stop.send(());
            task.abort();
        }
        if let Some((stop, task)) = self.worker.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

type Running<T> = (oneshot::Sender<()>, JoinHandle<T>);

/// Serves the API built from `config` on `addr`, retrying a moment while the port is
/// still held by an instance that just stopped.
async fn serve_api(config: &ApiConfig, addr: SocketAddr) -> (SocketAddr, Running<std::io::Result<()>>) {
    let router = api::build(config).await.expect("api builds");
    let deadline = Instant::now() + Duration::from_secs(5);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(err) if Instant::now() < deadline => {
                eprintln!("bind {addr}: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("cannot bind {addr}: {err}"),
        }
    };
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(api::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    (addr, (stop, task))
}

/// A running `jobs tail`.
struct Tail {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Tail {
    /// Reads stderr until a line contains `needle`; returns that line.
    async fn stderr_until(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.next_line())
                .await
                .unwrap_or_else(|_| panic!("tail wrote no {needle:?} to stderr within {within:?}"))
                .expect("stderr readable")
                .unwrap_or_else(|| panic!("tail's stderr ended before {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    async fn next_line(&mut self, within: Duration) -> String {
        tokio::time::timeout(within, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("tail printed nothing within {within:?}"))
            .expect("stdout readable")
            .expect("tail's stdout ended early")
    }

    /// Waits for the exit; returns its code and the rest of stdout.
    async fn exit(mut self, within: Duration) -> (i32, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("tail did not exit within {within:?}"))
            .expect("tail waited for");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = self.stdout.next_line().await {
            rest.push(line);
        }
        (status.code().expect("tail exited rather than being killed"), rest)
    }
}

fn status_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_prints_the_id_that_get_then_shows_with_its_history() {
    let mut system = System::start().await;
    system.start_worker();
    let payload = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(payload.path(), r#"{"ms": 5}"#).expect("payload written");
    let at_file = format!("@{}", payload.path().display());

    let run = system.jobs(&["enqueue", "sleep", "--payload", &at_file, "--queue", "naps"]).await;
    assert_eq!(run.code, 0, "{run}");
    let id = run.stdout.trim().to_owned();
    assert_eq!(id.len(), 36, "enqueue prints the bare id: {run}");
    system.wait_for_status(&id, "succeeded").await;

    let run = system.jobs(&["get", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["id", id.as_str()], "{run}");
    for expected in [["type", "sleep"], ["queue", "naps"], ["status", "succeeded"], ["payload", r#"{"ms":5}"#]] {
        assert!(lines.iter().any(|line| line.split_whitespace().eq(expected)), "no {expected:?} line: {run}");
    }
    let history = lines.iter().position(|line| *line == "history").expect("a history block");
    let statuses: Vec<&str> = lines[history + 2..].iter().map(|line| status_of(line)).collect();
    assert_eq!(statuses, ["queued", "running", "succeeded"], "{run}");

    let run = system.jobs(&["enqueue", "noop", "--json", "--delay-ms", "60000"]).await;
    assert_eq!(run.code, 0, "{run}");
    let record: Value = serde_json::from_str(&run.stdout).expect("--json prints one JSON document");
    assert_eq!((record["type"].as_str(), record["status"].as_str()), (Some("noop"), Some("scheduled")), "{record}");
    let id = record["id"].as_str().expect("id");
    let run = system.jobs(&["get", id, "--json"]).await;
    assert_eq!(run.code, 0, "{run}");
    let fetched: Value = serde_json::from_str(&run.stdout).expect("--json prints one JSON document");
    assert_eq!(fetched["id"], record["id"]);
    assert_eq!(fetched["payload"], json!({}), "get has the payload: {fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_status_queue_and_type_and_follows_every_page_with_all() {
    let system = System::start().await;
    let mut on_a = Vec::new();
    for _ in 0..3 {
        on_a.push(system.submit(json!({"type": "noop", "queue": "a"})).await);
    }
    for _ in 0..2 {
        system.submit(json!({"type": "sleep", "payload": {"ms": 1}, "queue": "b"})).await;
    }
    let (status, _) = system.post(&format!("/v1/jobs/{}/cancel", on_a[0]), &json!({})).await;
    assert_eq!(status, 200);

    let rows = |run: &Run| -> Vec<Vec<String>> {
        let mut lines = run.stdout.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["ID", "TYPE", "QUEUE", "STATUS", "ATTEMPTS", "CREATED"], "{run}");
        lines.map(|line| line.split_whitespace().map(str::to_owned).collect()).collect()
    };
    let run = system.jobs(&["list", "--queue", "a"]).await;
    assert_eq!(run.code, 0, "{run}");
    let listed = rows(&run);
    assert_eq!(listed.len(), 3, "{run}");
    assert!(listed.iter().all(|row| row[1] == "noop" && row[2] == "a" && row[4] == "0/5"), "{run}");
    let mut ids: Vec<&str> = listed.iter().map(|row| row[0].as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = on_a.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let run = system.jobs(&["list", "--type", "sleep"]).await;
    assert!(rows(&run).iter().all(|row| row[1] == "sleep") && rows(&run).len() == 2, "{run}");
    let run = system.jobs(&["list", "--status", "cancelled"]).await;
    assert_eq!(rows(&run).iter().map(|row| row[0].as_str()).collect::<Vec<_>>(), [on_a[0].as_str()], "{run}");
    let run = system.jobs(&["list", "--status", "queued", "--queue", "a"]).await;
    assert_eq!(rows(&run).len(), 2, "{run}");

    let run = system.jobs(&["list", "--limit", "2"]).await;
    assert_eq!(rows(&run).len(), 2, "one page only without --all: {run}");
    assert!(run.stderr.contains("more: jobs list --cursor "), "{run}");
    let run = system.jobs(&["list", "--limit", "2", "--all"]).await;
    assert_eq!(rows(&run).len(), 5, "{run}");

    let run = system.jobs(&["list", "--limit", "2", "--all", "--json"]).await;
    let records: Vec<Value> = run.stdout.lines().map(|line| serde_json::from_str(line).expect("NDJSON")).collect();
    assert_eq!(records.len(), 5, "{run}");
    let run = system.jobs(&["list", "--queue", "b", "--json"]).await;
    let page: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(2), "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_ndjson_lands_2500_jobs_exactly_once_through_429s() {
    let system = System::start_with(|config| {
        config.rate_limit.rate_limit_per_sec = 500;
        config.rate_limit.rate_limit_burst = 1_000;
    })
    .await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let lines: Vec<String> =
        (0..2_500).map(|ms| json!({"type": "sleep", "payload": {"ms": ms}, "delay_ms": 600_000}).to_string()).collect();
    std::fs::write(file.path(), lines.join("\n") + "\n").expect("file written");

    let run = system.jobs(&["enqueue", "--ndjson", &file.path().display().to_string()]).await;
    assert_eq!(run.code, 0, "{run}");
    let summary = run.stdout.trim();
    let retries: u64 = summary
        .strip_prefix("2500 jobs enqueued in 3 batches, ")
        .and_then(|rest| rest.strip_suffix(" retries after 429"))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary: {run}"));
    assert!(retries >= 1, "a burst of 1,000 and 500/s must refuse the second batch at least once: {run}");

    let mut slept: Vec<u64> =
        system.all_jobs().await.iter().map(|job| job["payload"]["ms"].as_u64().expect("ms")).collect();
    slept.sort_unstable();
    assert_eq!(slept, (0..2_500).collect::<Vec<u64>>(), "every line exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_ndjson_line_exits_65_naming_it_and_sends_nothing() {
    let system = System::start().await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "{\"type\":\"noop\"}\n\n{\"type\": \"noop\",\n{\"type\":\"noop\"}\n").expect("written");
    let path = file.path().display().to_string();

    let run = system.jobs(&["enqueue", "--ndjson", &path]).await;
    assert_eq!(run.code, 65, "{run}");
    assert!(run.stderr.starts_with("error: bad_input: ") && run.stderr.contains("line 3:"), "{run}");
    assert!(system.all_jobs().await.is_empty(), "nothing of the batch was sent");

    // Valid JSON the API refuses: the whole batch is refused and the line is named.
    std::fs::write(file.path(), "{\"type\":\"noop\"}\n{\"type\":\"sleep\",\"payload\":{\"ms\":\"long\"}}\n")
        .expect("written");
    let run = system.jobs(&["enqueue", "--ndjson", &path]).await;
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.starts_with("error: validation_failed: "), "{run}");
    assert!(run.stderr.contains("(line 2) (field jobs[1].payload.ms)"), "{run}");
    assert!(system.all_jobs().await.is_empty(), "a batch is all or nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_queues_every_failed_job_again_in_as_many_calls_as_needed() {
    let mut system = System::start().await;
    system.start_worker();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(system.submit(json!({"type": "fail", "payload": {"times": 100}, "max_attempts": 1})).await);
    }
    for id in &ids {
        system.wait_for_status(id, "failed").await;
    }
    // Stopped, so the retried jobs stay queued and the counts below are exact.
    system.stop_worker().await;

    let run = system.jobs(&["retry-failed", "default", "--limit", "2"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout.trim(), "3 jobs retried on queue default in 2 calls", "{run}");
    for id in &ids {
        let record = system.wait_for_status(id, "queued").await;
        assert_eq!(record["attempts"], 0, "a fresh attempt budget: {record}");
    }
    let run = system.jobs(&["retry-failed", "default", "--json"]).await;
    assert_eq!(run.code, 0, "{run}");
    let answer: Value = serde_json::from_str(run.stdout.trim()).expect("the API's answer");
    assert_eq!(answer, json!({"queue": "default", "retried": 0, "more": false}));
    assert_eq!(run.stderr.trim(), "0 jobs retried on queue default in 1 calls", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_change_a_job_and_refuse_the_wrong_state_with_exit_5() {
    let system = System::start().await;
    let id = system.submit(json!({"type": "noop", "delay_ms": 600_000})).await;

    let run = system.jobs(&["cancel", &id]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, format!("{id}: cancelled").as_str()), "{run}");
    let run = system.jobs(&["cancel", &id]).await;
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.starts_with("error: invalid_state: "), "{run}");

    let run = system.jobs(&["retry", &id, "--json"]).await;
    assert_eq!(run.code, 0, "{run}");
    let record: Value = serde_json::from_str(&run.stdout).expect("the record");
    assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("queued"), Some(0)), "{record}");
    let run = system.jobs(&["retry", &id]).await;
    assert_eq!(run.code, 5, "a queued job cannot be retried: {run}");
    let (_, record) = system.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(record["status"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_counts_per_queue_and_the_workers_for_an_operator() {
    let mut system = System::start().await;
    system.start_worker();
    let id = system.submit(json!({"type": "noop", "queue": "counted"})).await;
    system.wait_for_status(&id, "succeeded").await;
    system.submit(json!({"type": "noop", "queue": "counted", "delay_ms": 600_000})).await;

    let run = system.jobs(&["stats"]).await;
    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<Vec<&str>> = run.stdout.lines().map(|line| line.split_whitespace().collect()).collect();
    let header = ["QUEUE", "QUEUED", "SCHEDULED", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED"];
    assert_eq!(lines[0], header, "a tenant gets no latency: {run}");
    assert!(lines.contains(&vec!["counted", "0", "1", "0", "0", "1", "0", "0"]), "{run}");
    assert!(!run.stdout.contains("WORKER"), "a tenant sees no workers: {run}");

    let run = system.jobs_as(&system.operator, &["stats"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.lines().next().is_some_and(|line| line.ends_with("LATENCY_MS")), "{run}");
    let workers = run.stdout.lines().skip_while(|line| !line.starts_with("WORKER")).count();
    assert_eq!(workers, 2, "the workers table: a header and our one worker: {run}");

    let run = system.jobs_as(&system.operator, &["stats", "--json"]).await;
    let overview: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(overview["workers"].as_array().map(Vec::len), Some(1), "{overview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_a_jobs_queued_running_and_succeeded_then_exits_at_its_count() {
    let mut system = System::start().await;
    system.start_worker();
    let tail = system.tail(&["--queue", "watched", "--count", "3"]).await;
    let id = system.submit(json!({"type": "noop", "queue": "watched"})).await;

    let (code, lines) = tail.exit(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.iter().map(|line| status_of(line)).collect::<Vec<_>>(), ["queued", "running", "succeeded"]);
    for line in &lines {
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&columns[2..5], ["noop", "watched", id.as_str()], "time status type queue job_id attempt: {line}");
    }

    let tail = system.tail(&["--queue", "watched"]).await;
    let pid = tail.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    assert!(status.success());
    let (code, _) = tail.exit(Duration::from_secs(5)).await;
    assert_eq!(code, 0, "Ctrl-C ends tail with 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_resumes_after_the_api_restarts_without_losing_or_repeating_an_event() {
    let mut system = System::start().await;
    let mut tail = system.tail(&["--queue", "resumed", "--count", "2", "--json"]).await;
    let before = system.submit(json!({"type": "noop", "queue": "resumed"})).await;
    let first: Value = serde_json::from_str(&tail.next_line(Duration::from_secs(10)).await).expect("NDJSON");
    assert_eq!((first["job_id"].as_str(), first["status"].as_str()), (Some(before.as_str()), Some("queued")));

    // The API goes away (1001 to the socket); while it is down, a job is submitted
    // through another instance, so its event exists only in the stream.
    system.stop_api().await;
    tail.stderr_until("reconnecting", Duration::from_secs(10)).await;
    let (other, (stop, task)) = serve_api(&system.api_config(), "127.0.0.1:0".parse().expect("addr")).await;
    let during = system.submit_to(&format!("http://{other}"), json!({"type": "noop", "queue": "resumed"})).await;
    let _ = stop.send(());
    task.abort();
    let config = system.api_config();
    system.serve(config).await;

    let (code, rest) = tail.exit(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{rest:?}");
    let events: Vec<Value> = rest.iter().map(|line| serde_json::from_str(line).expect("NDJSON")).collect();
    assert_eq!(events.len(), 1, "exactly the missed event, not the first again: {events:?}");
    assert_eq!((events[0]["job_id"].as_str(), events[0]["status"].as_str()), (Some(during.as_str()), Some("queued")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_with_their_documented_codes_and_the_apis_error() {
    let system = System::start().await;

    let run = system.jobs_as("not-a-token", &["list"]).await;
    assert_eq!(run.code, 4, "{run}");
    assert!(run.stderr.starts_with("error: unauthorized: "), "{run}");
    let run = system.jobs_as("not-a-token", &["tail", "--count", "1"]).await;
    assert_eq!(run.code, 4, "the upgrade is refused before any socket opens: {run}");

    let run = system.jobs(&["get", "01a21432-e6a2-7208-9114-1eea7caaccb6"]).await;
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.starts_with("error: not_found: "), "{run}");

    let run = system.jobs(&["enqueue", "sleep", "--payload", r#"{"ms":"long"}"#]).await;
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.starts_with("error: validation_failed: ") && run.stderr.contains("(field payload.ms)"), "{run}");
    let run = system.jobs(&["enqueue", "sleep", "--payload", "{not json"]).await;
    assert_eq!(run.code, 65, "{run}");
    let run = system.jobs(&["list", "--limit", "0"]).await;
    assert_eq!(run.code, 2, "usage errors are clap's: {run}");

    let nobody = format!("http://127.0.0.1:{}", shared::testkit::free_port());
    let run = system.jobs(&["stats", "--api", &nobody]).await;
    assert_eq!(run.code, 7, "{run}");
    assert!(run.stderr.starts_with("error: unavailable: "), "{run}");
}
