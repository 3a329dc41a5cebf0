//! Starting our system under test: the real `api` and `worker` release binaries
//! (pinned to the system-under-test CPU), or — for the smoke test — the same
//! library code in this process.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth;
use crate::procs::{ChildGuard, CpuOf, free_port, pinned_command};
use crate::run::Plan;

/// Redis key prefix of every run.
pub const PREFIX: &str = "bench";
/// How long an API or worker gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// SIGTERM grace before a process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How our processes run.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `api` and `worker` binaries from this directory, as child processes.
    Binaries(PathBuf),
    /// `api::serve` and `worker::run` on this process's runtime (smoke test).
    InProcess,
}

/// Everything needed to start our API and workers against one Redis.
#[derive(Debug, Clone)]
pub struct Ours {
    pub launch: Launch,
    pub redis_url: String,
    pub cpu: Option<usize>,
    pub jwt_secret: String,
    /// Extra environment for the API (`KEY=VALUE`), e.g. rate limits.
    pub api_env: Vec<(String, String)>,
    /// Where child processes' stderr goes.
    pub log_dir: PathBuf,
}

pub struct RunningApi {
    pub base: String,
    pub cpu: CpuOf,
    inner: Running,
}

pub struct RunningWorker {
    pub cpu: CpuOf,
    inner: Running,
}

enum Running {
    Process(ChildGuard),
    Task { stop: oneshot::Sender<()>, task: JoinHandle<()> },
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Process(child) => {
                let _ = tokio::task::spawn_blocking(move || child.stop(STOP_GRACE)).await;
            }
            Running::Task { stop, task } => {
                let _ = stop.send(());
                let _ = tokio::time::timeout(STOP_GRACE, task).await;
            }
        }
    }
}

impl RunningApi {
    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

impl RunningWorker {
    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

impl Ours {
    /// Ours as `plan` runs it, against the Redis at `redis_url`.
    pub fn for_plan(plan: &Plan, redis_url: String) -> Self {
        Self {
            launch: plan.ours.launch.clone(),
            redis_url,
            cpu: plan.pinning.sut_cpu,
            jwt_secret: auth::BENCH_JWT_SECRET.to_owned(),
            api_env: plan.ours.api_env.clone(),
            log_dir: plan.results_dir.join("logs"),
        }
    }

    pub fn api_binary(&self) -> Option<PathBuf> {
        match &self.launch {
            Launch::Binaries(dir) => Some(dir.join("api")),
            Launch::InProcess => None,
        }
    }

    fn log(&self, name: &str) -> anyhow::Result<File> {
        std::fs::create_dir_all(&self.log_dir)?;
        let path = self.log_dir.join(name);
        File::options().create(true).append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))
    }

    /// Starts an API and waits until `/readyz` answers 200 (migrations applied).
    pub async fn start_api(&self) -> anyhow::Result<RunningApi> {
        let http = reqwest::Client::new();
        match &self.launch {
            Launch::Binaries(dir) => {
                let port = free_port()?;
                let mut command = pinned_command(dir.join("api"), self.cpu);
                command
                    .env("REDIS_URL", &self.redis_url)
                    .env("REDIS_PREFIX", PREFIX)
                    .env("BIND_ADDR", format!("127.0.0.1:{port}"))
                    .env("DEMO_JOBS", "true")
                    .env("JWT_SECRET", &self.jwt_secret)
                    .env("RUST_LOG", "warn")
                    .envs(self.api_env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(self.log("api.log")?);
                let mut child = ChildGuard::spawn("api", command)?;
                let base = format!("http://127.0.0.1:{port}");
                let deadline = Instant::now() + READY_TIMEOUT;
                loop {
                    if let Some(status) = child.exited() {
                        bail!("api exited ({status}); see {}", self.log_dir.join("api.log").display());
                    }
                    if let Ok(response) = http.get(format!("{base}/readyz")).send().await
                        && response.status().is_success()
                    {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("api not ready within {READY_TIMEOUT:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(RunningApi { base, cpu: CpuOf::Pid(child.pid()), inner: Running::Process(child) })
            }
            Launch::InProcess => {
                let mut config = api::config::ApiConfig::defaults();
                config.redis.redis_url = self.redis_url.clone();
                config.redis.redis_prefix = PREFIX.to_owned();
                config.auth.jwt_secret = Some(self.jwt_secret.clone().into());
                // As the process launch does: rate limits out of the way.
                config.rate_limit.rate_limit_per_sec = 1_000_000;
                config.rate_limit.rate_limit_burst = 1_000_000;
                config.demo.demo_jobs = Some(true);
                let router = api::build(&config).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let base = format!("http://{}", listener.local_addr()?);
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(async move {
                    let _ = api::serve(listener, router, async move {
                        let _ = stopped.await;
                    })
                    .await;
                });
                Ok(RunningApi { base, cpu: CpuOf::ThisProcess, inner: Running::Task { stop, task } })
            }
        }
    }

    /// Starts one worker serving every queue. It is not waited for: a run's clock
    /// starts at the spawn, so the worker's start-up counts against us.
    pub fn start_worker(&self, concurrency: u32, claim_batch: Option<u32>) -> anyhow::Result<RunningWorker> {
        match &self.launch {
            Launch::Binaries(dir) => {
                let mut command = pinned_command(dir.join("worker"), self.cpu);
                command
                    .env("REDIS_URL", &self.redis_url)
                    .env("REDIS_PREFIX", PREFIX)
                    .env("DEMO_JOBS", "true")
                    .env("CONCURRENCY", concurrency.to_string())
                    .env("SHUTDOWN_GRACE_SECS", "5")
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(self.log("worker.log")?);
                if let Some(batch) = claim_batch {
                    command.env("CLAIM_BATCH", batch.to_string());
                }
                let child = ChildGuard::spawn("worker", command)?;
                Ok(RunningWorker { cpu: CpuOf::Pid(child.pid()), inner: Running::Process(child) })
            }
            Launch::InProcess => {
                let mut config = worker::config::WorkerConfig::defaults();
                config.redis.redis_url = self.redis_url.clone();
                config.redis.redis_prefix = PREFIX.to_owned();
                config.concurrency = concurrency;
                config.claim_batch = claim_batch;
                config.demo.demo_jobs = Some(true);
                config.shutdown_grace_secs = 5;
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(async move {
                    if let Err(err) = worker::run(config, async move {
                        let _ = stopped.await;
                    })
                    .await
                    {
                        eprintln!("bench: in-process worker failed: {err:#}");
                    }
                });
                Ok(RunningWorker { cpu: CpuOf::ThisProcess, inner: Running::Task { stop, task } })
            }
        }
    }

    /// Checks that a worker process is still alive (a crashed worker would
    /// otherwise only show as a timeout).
    pub fn check_alive(worker: &mut RunningWorker) -> anyhow::Result<()> {
        if let Running::Process(child) = &mut worker.inner
            && let Some(status) = child.exited()
        {
            bail!("worker exited ({status}) during the run");
        }
        Ok(())
    }
}
