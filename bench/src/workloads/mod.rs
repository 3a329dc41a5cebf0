//! The workloads, each one function that measures one phase of our system:
//! - `enqueue.rs` — workload 1, through `POST /v1/jobs/batch` and through `JobStore::enqueue`;
//! - `process.rs` — workload 2, one worker draining pre-loaded jobs;
//! - `latency.rs` — workload 3, open-loop `POST /v1/jobs` at fixed rates;
//! - `e2e.rs` — workload 4, `POST /v1/jobs` → `succeeded` event on a WebSocket;
//! - `fanout.rs` — workload 6, thousands of WebSocket subscribers;
//! - `hostile.rs` — one tenant attacking, another measured beside it;
//! - `open_loop.rs` — the fixed-rate generator of workloads 3, 4 and 6.

pub mod e2e;
pub mod enqueue;
pub mod fanout;
pub mod hostile;
pub mod latency;
pub mod open_loop;
pub mod process;

use std::time::Duration;

use anyhow::Context as _;
use shared::jobs::Registry;
use shared::keys::Keys;
use shared::store::{JobStore, NewJob, StoreConfig};

use crate::ours::PREFIX;

/// The job type every workload uses.
pub const JOB_TYPE: &str = "noop";

/// Sizes and pacing shared by workloads 1 and 2.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Jobs per run.
    pub jobs: u64,
    /// Jobs per enqueue call (HTTP batch, `enqueue`, `addBulk`, producer batch).
    pub chunk: usize,
    /// Enqueue calls in flight at once.
    pub inflight: usize,
    /// Jobs a worker runs at once.
    pub concurrency: u32,
    /// Most jobs a worker claims per round trip; `None` = the worker's default.
    pub claim_batch: Option<u32>,
    /// How often progress is polled while a worker drains.
    pub poll_ms: u64,
    /// A phase that takes longer fails.
    pub timeout_secs: u64,
    /// Tenants the jobs are spread over, one enqueue request each in turn.
    pub tenants: usize,
}

impl Params {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// The queue `noop` jobs go to.
pub fn noop_queue() -> String {
    Registry::standard(true).defaults(JOB_TYPE).map_or_else(|| "default".to_owned(), |d| d.queue.to_owned())
}

pub fn keys() -> Keys {
    Keys::new(PREFIX)
}

/// A `noop` job of `tenant` with its type's defaults, as the API would build it.
pub fn noop_job(tenant: &str) -> NewJob {
    let defaults = Registry::standard(true).defaults(JOB_TYPE).unwrap_or_default();
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        kind: JOB_TYPE.to_owned(),
        queue: defaults.queue.to_owned(),
        payload: "{}".to_owned(),
        max_attempts: defaults.max_attempts,
        timeout_ms: defaults.timeout.as_millis() as u64,
        when: shared::store::When::Now,
        backoff_base_ms: defaults.backoff.base.as_millis() as u64,
        backoff_cap_ms: defaults.backoff.cap.as_millis() as u64,
        retention_secs: None,
        recipients: 0,
    }
}

/// Jobs queued on the `noop` queue, over every tenant.
pub async fn queued(conn: &mut redis::aio::MultiplexedConnection, tenants: &[String]) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for tenant in tenants {
        pipe.llen(keys().ready(&noop_queue(), tenant));
    }
    let lengths: Vec<u64> = pipe.query_async(conn).await?;
    Ok(lengths.iter().sum())
}

/// A job store on `redis_url` with the schema applied and the scripts loaded,
/// as the API prepares its own at start-up.
pub async fn store(redis_url: &str) -> anyhow::Result<JobStore> {
    let mut conn = shared::store::connect(redis_url, Some(Duration::from_secs(10))).await?;
    shared::migrate::run(&mut conn, &keys()).await.context("cannot migrate")?;
    shared::scripts::preload(&mut conn).await.context("cannot load the scripts")?;
    Ok(JobStore::new(conn, StoreConfig { prefix: PREFIX.to_owned(), ..StoreConfig::default() }))
}

/// Enqueues `jobs` no-op jobs through the library, `chunk` per call, `inflight`
/// calls at once, each call for the next of `tenants`. Used to measure workload 1
/// and to pre-load workload 2.
pub async fn enqueue_library(
    store: &JobStore,
    jobs: u64,
    chunk: usize,
    inflight: usize,
    tenants: &[String],
) -> anyhow::Result<()> {
    let next = std::sync::atomic::AtomicU64::new(0);
    let lane = || async {
        loop {
            let start = next.fetch_add(chunk as u64, std::sync::atomic::Ordering::Relaxed);
            if start >= jobs {
                return anyhow::Ok(());
            }
            let size = (jobs - start).min(chunk as u64) as usize;
            let tenant = &tenants[(start / chunk as u64) as usize % tenants.len()];
            let batch: Vec<NewJob> = (0..size).map(|_| noop_job(tenant)).collect();
            store.enqueue(&batch, None, shared::store::TenantLimits::default()).await.context("enqueue failed")?;
        }
    };
    futures::future::try_join_all((0..inflight.max(1)).map(|_| lane())).await?;
    Ok(())
}

/// An HTTP client for the load: no Nagle, enough idle connections kept.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?)
}
