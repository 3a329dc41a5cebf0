//! Test harness: a whole system per test — its own `redis-server` (AOF on, free
//! port), a real SMTP server, the real API on 127.0.0.1:0, and workers either
//! in-process or as real `worker` processes that can be killed.

#![allow(dead_code)]

pub mod events;
pub mod proxy;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::config::ApiConfig;
use redis::aio::ConnectionManager;
use reqwest::StatusCode;
use serde_json::Value;
use shared::testkit::{RedisServer, SmtpServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use worker::config::WorkerConfig;

/// The HS256 secret every test API verifies tokens with.
pub const TEST_SECRET: &str = "test secret, at least thirty-two bytes long";

/// The tenant the harness acts for unless a test says otherwise.
pub const TENANT: &str = "acme";

/// Lease used by test workers: short, so crash recovery is quick to observe.
pub const TEST_LEASE_SECS: u64 = 2;

pub struct System {
    pub redis: RedisServer,
    pub smtp: SmtpServer,
    pub prefix: String,
    pub base: String,
    /// Sends a `jobs:write jobs:read email:send` token of [`TENANT`].
    pub http: reqwest::Client,
    /// Sends an `admin` token of [`TENANT`].
    pub admin: reqwest::Client,
    api_stop: Option<oneshot::Sender<()>>,
    api_task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A worker running inside the test process.
pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    /// Sends the shutdown signal and waits for the worker to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// A `worker` process.
pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies mid-job, without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGSTOP: the process freezes mid-whatever, timers and sockets included.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT: the frozen process carries on as if no time had passed.
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

/// Sends `signal` (e.g. `-STOP`) to `pid`, a process this test started.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A worker process's log (its stderr), in a file the test can read while it runs.
pub struct WorkerLog {
    file: tempfile::NamedTempFile,
}

impl WorkerLog {
    pub fn new() -> Self {
        Self { file: tempfile::NamedTempFile::new().expect("log file") }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(self.file.path()).unwrap_or_default()
    }

    fn sink(&self) -> std::fs::File {
        self.file.reopen().expect("log file reopens")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The API's configuration in tests: tokens signed with [`TEST_SECRET`], no
/// clock-skew leeway, no rate limit.
/// The `worker` binary: there for the worker's tests, not for other packages'.
pub fn worker_binary() -> &'static str {
    match option_env!("CARGO_BIN_EXE_worker") {
        Some(binary) => binary,
        None => panic!("the worker binary is built for the worker's tests"),
    }
}

pub fn api_config(redis_url: &str, prefix: &str) -> ApiConfig {
    let mut config = ApiConfig::defaults();
    config.redis.redis_url = redis_url.to_owned();
    config.redis.redis_prefix = prefix.to_owned();
    config.bind_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.jwt_secret = Some(TEST_SECRET.to_owned().into());
    config.auth.jwt_leeway_secs = 0;
    config.auth.admin_tenant = Some(TENANT.to_owned());
    config.demo.demo_jobs = Some(true);
    config.rate_limit.rate_limit_per_sec = 0;
    config
}

/// A token for `tenant` with `scope`, signed with [`TEST_SECRET`].
pub fn token(tenant: &str, scope: &str, ttl: Duration) -> String {
    let mut config = ApiConfig::defaults();
    config.auth.jwt_secret = Some(TEST_SECRET.to_owned().into());
    let request = api::auth::TokenRequest { tenant, subject: "test", scope, ttl, private_key_file: None };
    api::auth::mint(&config.auth, &request).expect("token minted")
}

/// An HTTP client that sends `token` with every request.
pub fn client_for(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().timeout(Duration::from_secs(15)).default_headers(headers).build().expect("http client")
}

impl System {
    /// Redis, SMTP and the API; no worker yet.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::start_on(RedisServer::start(), tune).await
    }

    /// [`Self::start_with`] on a Redis the test started itself.
    pub async fn start_on(redis: RedisServer, tune: impl FnOnce(&mut ApiConfig)) -> Self {
        shared::telemetry::init(shared::config::LogFormat::Text);
        let smtp = SmtpServer::start();
        let prefix = format!("t{}", std::process::id());
        let mut system = Self {
            redis,
            smtp,
            prefix,
            base: String::new(),
            http: client_for(&token(TENANT, "jobs:write jobs:read email:send", Duration::from_secs(3600))),
            admin: client_for(&token(TENANT, "admin", Duration::from_secs(3600))),
            api_stop: None,
            api_task: None,
        };
        let mut config = system.api_config();
        tune(&mut config);
        system.start_api(config).await;
        system
    }

    pub fn api_config(&self) -> ApiConfig {
        api_config(&self.redis.url(), &self.prefix)
    }

    async fn start_api(&mut self, config: ApiConfig) {
        let router = api::build(&config).await.expect("api builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        self.api_stop = Some(stop);
        self.api_task = Some(tokio::spawn(api::serve(listener, router, async move {
            let _ = stopped.await;
        })));
    }

    /// Starts one more API instance on the same Redis and prefix; returns its base URL.
    /// It runs until the test ends.
    pub async fn start_another_api(&self) -> String {
        self.start_another_api_with(|_| {}).await
    }

    /// [`Self::start_another_api`], with its configuration tuned first.
    pub async fn start_another_api_with(&self, tune: impl FnOnce(&mut ApiConfig)) -> String {
        let mut config = self.api_config();
        tune(&mut config);
        let router = api::build(&config).await.expect("api builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(api::serve(listener, router, std::future::pending()));
        base
    }

    pub fn worker_config(&self) -> WorkerConfig {
        let mut config = WorkerConfig::defaults();
        config.redis.redis_url = self.redis.url();
        config.redis.redis_prefix = self.prefix.clone();
        config.lease_secs = TEST_LEASE_SECS;
        config.shutdown_grace_secs = 5;
        config.concurrency = 8;
        config.smtp_url = self.smtp.url().into();
        config.mail_from = "Jobs <jobs@example.test>".parse().expect("mailbox");
        config.demo.demo_jobs = Some(true);
        config
    }

    pub fn spawn_worker(&self) -> InProcessWorker {
        self.spawn_worker_with(|_| {})
    }

    pub fn spawn_worker_with(&self, tune: impl FnOnce(&mut WorkerConfig)) -> InProcessWorker {
        let mut config = self.worker_config();
        tune(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker::run(config, async move {
            let _ = stopped.await;
        }));
        InProcessWorker { stop: Some(stop), task }
    }

    /// A real `worker` process (for kill -9 and SIGTERM tests).
    pub fn spawn_worker_process(&self, env: &[(&str, &str)]) -> WorkerProcess {
        self.spawn_worker_process_logging_to(env, Stdio::null())
    }

    /// A real `worker` process whose log (stderr) goes to `log`, which the test can read.
    pub fn spawn_logged_worker_process(&self, env: &[(&str, &str)], log: &WorkerLog) -> WorkerProcess {
        self.spawn_worker_process_logging_to(env, log.sink())
    }

    /// A real `worker` process whose log (stderr) goes to `log`.
    pub fn spawn_worker_process_logging_to(&self, env: &[(&str, &str)], log: impl Into<Stdio>) -> WorkerProcess {
        let mut command = Command::new(worker_binary());
        command
            .env("REDIS_URL", self.redis.url())
            .env("REDIS_PREFIX", &self.prefix)
            .env("LEASE_SECS", TEST_LEASE_SECS.to_string())
            .env("SHUTDOWN_GRACE_SECS", "10")
            .env("SMTP_URL", self.smtp.url())
            .env("CONCURRENCY", "8")
            .env("DEMO_JOBS", "true")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        WorkerProcess { child: command.spawn().expect("worker binary starts") }
    }

    pub async fn redis_conn(&self) -> ConnectionManager {
        shared::store::connect(&self.redis.url(), Some(Duration::from_secs(5))).await.expect("redis connects")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status, body (JSON or Null) and headers.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.http.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("request sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs with the admin token.
    pub async fn get_admin(&self, path: &str) -> (StatusCode, Value) {
        let response = self.admin.get(self.url(path)).send().await.expect("request sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits one job, expecting 202; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, record, _) = self.post("/v1/jobs", &body, &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit {body}: {record}");
        record["id"].as_str().expect("id").to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, record) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "job {id}: {record}");
        record
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}/events")).await;
        assert_eq!(status, StatusCode::OK);
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the job reaches `status`; fails the test at `within`.
    pub async fn wait_for_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, record) = self.get(&format!("/v1/jobs/{id}")).await;
            // A 503 while Redis comes back is not an answer yet.
            if code != StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(code, StatusCode::OK, "job {id}: {record}");
            }
            if record["status"] == status {
                return record;
            }
            assert!(Instant::now() < deadline, "job {id} did not reach {status} within {within:?}: {record}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `INFO commandstats` as command → calls.
    pub async fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut self.redis_conn().await).await.expect("info");
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.api_task.take() {
            task.abort();
        }
    }
}

/// Scrapes a worker's Prometheus page at `addr` (its `METRICS_ADDR`); `None` while it does not answer.
pub async fn scrape(addr: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()
}

/// The value of one sample (`name{labels} value`) in a Prometheus text page.
pub fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Polls `check` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
