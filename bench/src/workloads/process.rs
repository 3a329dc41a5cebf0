//! Workload 2: one worker process at concurrency 50 drains pre-loaded no-op
//! jobs; the clock runs from the worker's spawn until every job has succeeded.
//!
//! Progress is polled straight from Redis (one pipeline of 4 counters per
//! poll, every `poll_ms`), and those calls are taken out of the command
//! counts, so the poller does not distort the figures.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use redis::aio::MultiplexedConnection;
use shared::keys::RUNNING_PIN;
use shared::model::{JobStatus, State};

use super::{Params, keys, noop_queue};
use crate::measure::{Measurement, Workload};
use crate::ours::Ours;
use crate::procs::{CpuOf, cpu_secs};
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;

/// Runs one worker over the jobs already queued; `params.jobs` must be there.
pub async fn drain(ours: &Ours, redis: &BenchRedis, params: &Params, pair: usize) -> anyhow::Result<Measurement> {
    let mut conn = redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let own_cpu_before = cpu_secs(CpuOf::ThisProcess)?;
    let started = Instant::now();
    let mut worker = ours.start_worker(params.concurrency, params.claim_batch)?;
    let mut polls = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(params.poll_ms)).await;
        polls += 1;
        if outstanding(&mut conn).await? == 0 {
            break;
        }
        Ours::check_alive(&mut worker)?;
        if started.elapsed() > params.timeout() {
            worker.stop().await;
            bail!("jobs still outstanding after {:?}", params.timeout());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = match worker.cpu {
        CpuOf::Pid(_) => cpu_secs(worker.cpu)?,
        CpuOf::ThisProcess => cpu_secs(CpuOf::ThisProcess)? - own_cpu_before,
    };
    let mut delta = before.delta(&RedisSample::read(&mut conn).await?);
    for (command, per_poll) in [("llen", 1), ("hlen", 1), ("zcard", 2)] {
        delta.discount(command, polls * per_poll);
    }
    worker.stop().await;
    let succeeded = count_succeeded(&mut conn).await?;
    ensure!(succeeded == params.jobs, "{succeeded} of {} jobs succeeded", params.jobs);
    Ok(Measurement::new("ours", Workload::Process, pair, params.jobs, secs, &delta, cpu))
}

/// Whether jobs are not finished yet: tenants with ready jobs, leases (but for
/// the hash's pin), jobs waiting for a retry, or scheduled.
async fn outstanding(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let (keys, queue) = (keys(), noop_queue());
    let (ready, running, pinned, retry, scheduled): (u64, u64, bool, u64, u64) = redis::pipe()
        .llen(keys.ring(&queue))
        .hlen(keys.running(&queue))
        .hexists(keys.running(&queue), RUNNING_PIN)
        .zcard(keys.retry(&queue))
        .zcard(keys.scheduled(&queue))
        .query_async(conn)
        .await
        .context("cannot poll progress")?;
    Ok(ready + running - u64::from(pinned) + retry + scheduled)
}

/// Jobs whose record says `succeeded` (a full scan of the state column, after the clock stops).
async fn count_succeeded(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let key = keys().state();
    let mut cursor = "0".to_owned();
    let mut succeeded = 0;
    for _ in 0..1_000_000 {
        let (next, fields): (String, Vec<String>) =
            redis::cmd("HSCAN").arg(&key).arg(&cursor).arg("COUNT").arg(2000).query_async(conn).await?;
        succeeded += fields
            .chunks(2)
            .filter_map(|pair| State::parse(pair.get(1)?.lines().next()?))
            .filter(|state| state.status == JobStatus::Succeeded)
            .count() as u64;
        if next == "0" {
            return Ok(succeeded);
        }
        cursor = next;
    }
    bail!("HSCAN of {key} did not finish")
}
