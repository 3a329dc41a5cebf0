//! Workload 1: bulk enqueue of no-op jobs, through `POST /v1/jobs/batch` and
//! through `JobStore::enqueue` directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};

use super::Params;
use crate::measure::{Measurement, Workload};
use crate::ours::RunningApi;
use crate::procs::{CpuOf, cpu_secs};
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;

/// A batch request body of `size` no-op jobs (ids are made by the API).
fn batch_body(size: usize) -> Vec<u8> {
    let jobs: Vec<serde_json::Value> = (0..size).map(|_| serde_json::json!({ "type": super::JOB_TYPE })).collect();
    serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap_or_default()
}

/// POSTs `params.jobs` jobs in batches of `params.chunk`, `params.inflight`
/// requests at once. Request bodies are built before the clock starts: the
/// client's JSON encoding is not the API's cost.
pub async fn http(
    api: &RunningApi,
    redis: &BenchRedis,
    tokens: &[String],
    params: &Params,
    pair: usize,
) -> anyhow::Result<Measurement> {
    let tenants = crate::auth::tenants(params.tenants);
    let client = super::http_client()?;
    let full = batch_body(params.chunk);
    let last = batch_body((params.jobs % params.chunk as u64) as usize);
    let url = format!("{}/v1/jobs/batch", api.base);
    let mut conn = redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let cpu_before = cpu_secs(api.cpu)?;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let lane = || async {
        loop {
            let start = next.fetch_add(params.chunk as u64, Ordering::Relaxed);
            if start >= params.jobs {
                return anyhow::Ok(());
            }
            let body = if params.jobs - start >= params.chunk as u64 { full.clone() } else { last.clone() };
            let token = &tokens[(start / params.chunk as u64) as usize % tokens.len()];
            let response = client
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .context("batch request failed")?;
            let status = response.status();
            let text = response.bytes().await.context("batch response failed")?;
            if status != reqwest::StatusCode::ACCEPTED {
                bail!("POST /v1/jobs/batch answered {status}: {}", String::from_utf8_lossy(&text));
            }
        }
    };
    futures::future::try_join_all((0..params.inflight.max(1)).map(|_| lane())).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(api.cpu)? - cpu_before;
    let delta = before.delta(&RedisSample::read(&mut conn).await?);
    let queued = super::queued(&mut conn, &tenants).await?;
    ensure!(queued == params.jobs, "{queued} jobs queued after enqueueing {}", params.jobs);
    Ok(Measurement::new("ours", Workload::EnqueueHttp, pair, params.jobs, secs, &delta, cpu))
}

/// Calls `JobStore::enqueue` with batches of `params.chunk` jobs from this
/// process (whose CPU is what the library costs its caller).
pub async fn library(redis: &BenchRedis, params: &Params, pair: usize) -> anyhow::Result<Measurement> {
    let store = super::store(&redis.url()).await?;
    let mut conn = redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let cpu_before = cpu_secs(CpuOf::ThisProcess)?;
    let started = Instant::now();
    let tenants = crate::auth::tenants(params.tenants);
    super::enqueue_library(&store, params.jobs, params.chunk, params.inflight, &tenants).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(CpuOf::ThisProcess)? - cpu_before;
    let delta = before.delta(&RedisSample::read(&mut conn).await?);
    let queued = super::queued(&mut conn, &tenants).await?;
    ensure!(queued == params.jobs, "{queued} jobs queued after enqueueing {}", params.jobs);
    Ok(Measurement::new("ours", Workload::EnqueueLibrary, pair, params.jobs, secs, &delta, cpu))
}
