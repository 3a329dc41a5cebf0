//! Workload 4, end to end: jobs submitted with single `POST /v1/jobs` at a fixed
//! open-loop rate, one worker process running them, and one WebSocket
//! subscriber (all of the tenant's jobs, opened before the first job). A job's
//! latency runs from its *scheduled* send time to its `succeeded` event
//! arriving on the socket.
//!
//! Events are matched to jobs by `job_id`. The reader records every
//! `succeeded` arrival whether or not the POST that made the job has answered
//! yet (on a fast path the event can beat the 202), and the two are joined at
//! the end. Once the generator is done, the reader is told which ids to wait
//! for and ends when it has them all, or at the timeout; what is missing then
//! is `lost`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::latency::percentile;
use super::open_loop::{self, Schedule};
use crate::events_client::{self, ABNORMAL_CLOSE, Socket};
use crate::measure::E2eRun;
use crate::ours::{RunningApi, RunningWorker};
use crate::procs::{CpuOf, CpuTicks, cpu_secs};
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;
use crate::run::E2ePlan;

/// One submission's fate.
struct Posted {
    scheduled: Instant,
    sent: Instant,
    done: Instant,
    /// The job id from a 202, `None` otherwise.
    id: Option<String>,
}

/// The part of a 202 the harness reads (serde skips the rest of the record).
#[derive(serde::Deserialize)]
struct Accepted {
    id: String,
}

/// What the subscriber saw.
struct Reading {
    /// Job id → when its `succeeded` event arrived.
    succeeded: HashMap<String, Instant>,
    /// Set if the server closed the socket.
    closed: Option<u16>,
}

/// The API and worker to measure (both running), and where to send.
pub struct Target<'a> {
    pub api: &'a RunningApi,
    pub worker: &'a RunningWorker,
    pub redis: &'a BenchRedis,
    pub token: &'a str,
    /// The CPU they (and this harness) are pinned to, `None` for all CPUs.
    pub sut_cpu: Option<usize>,
}

/// Runs workload 4 at `rate` jobs/s for `plan.warmup_secs + plan.secs`.
pub async fn at_rate(target: &Target<'_>, plan: &E2ePlan, rate: u32, round: usize) -> anyhow::Result<E2eRun> {
    let client = super::http_client()?;
    let url = format!("{}/v1/jobs", target.api.base);
    let body = serde_json::to_vec(&serde_json::json!({ "type": super::JOB_TYPE }))?;
    let socket = events_client::open(&target.api.base, target.token, "", None).await.context("the subscriber")?;
    let (expect_tx, expect_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let reader = tokio::spawn(read(socket, expect_rx, stop_rx));

    let mut conn = target.redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let api_before = cpu_secs(target.api.cpu)?;
    let worker_before = cpu_secs(target.worker.cpu)?;
    let own_before = cpu_secs(CpuOf::ThisProcess)?;
    let ticks_before = CpuTicks::read(target.sut_cpu)?;

    let schedule = Schedule::new(f64::from(rate), plan.warmup_secs + plan.secs);
    let send = |scheduled: Instant| {
        let request =
            client.post(&url).bearer_auth(target.token).header("content-type", "application/json").body(body.clone());
        async move {
            let sent = Instant::now();
            let id = match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    response.json::<Accepted>().await.ok().map(|a| a.id)
                }
                Ok(_) | Err(_) => None,
            };
            Posted { scheduled, sent, done: Instant::now(), id }
        }
    };
    let skipped = |scheduled: Instant| {
        let now = Instant::now();
        Posted { scheduled, sent: now, done: now, id: None }
    };
    let posted = open_loop::run(schedule, send, skipped).await?;

    let expected: HashSet<String> = posted.iter().filter_map(|p| p.id.clone()).collect();
    let _ = expect_tx.send(expected);
    let timeout = Duration::from_secs_f64(plan.timeout_secs);
    let mut reader = reader;
    let reading = match tokio::time::timeout(timeout, &mut reader).await {
        Ok(joined) => joined.context("the subscriber task failed")?,
        Err(_) => {
            let _ = stop_tx.send(());
            reader.await.context("the subscriber task failed")?
        }
    };
    let api_cpu = cpu_secs(target.api.cpu)? - api_before;
    let worker_cpu = match target.worker.cpu {
        // In process (smoke test) the api, worker and harness share one figure.
        CpuOf::ThisProcess => 0.0,
        of @ CpuOf::Pid(_) => cpu_secs(of)? - worker_before,
    };
    let own_cpu = cpu_secs(CpuOf::ThisProcess)? - own_before;
    let busy = CpuTicks::read(target.sut_cpu)?.busy_pct_since(&ticks_before);
    let delta = before.delta(&RedisSample::read(&mut conn).await?);

    let counted_from = schedule.start + Duration::from_secs_f64(plan.warmup_secs);
    let counted: Vec<&Posted> = posted.iter().filter(|p| p.scheduled >= counted_from).collect();
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let mut latencies = Vec::with_capacity(counted.len());
    let mut lost = 0;
    for p in counted.iter().filter(|p| p.id.is_some()) {
        match p.id.as_ref().and_then(|id| reading.succeeded.get(id)) {
            Some(&arrived) => latencies.push(ms(p.scheduled, arrived)),
            None => lost += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut posts: Vec<f64> = counted.iter().filter(|p| p.id.is_some()).map(|p| ms(p.scheduled, p.done)).collect();
    posts.sort_by(f64::total_cmp);
    let mut lags: Vec<f64> = counted.iter().map(|p| ms(p.scheduled, p.sent)).collect();
    lags.sort_by(f64::total_cmp);
    let sent = posted.len().max(1) as f64;
    let jobs = counted.iter().filter(|p| p.id.is_some()).count() as u64;
    Ok(E2eRun {
        round,
        rate,
        secs: plan.secs,
        jobs,
        post_errors: counted.len() as u64 - jobs,
        lost,
        subscriber_closed: reading.closed,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        post_p99_ms: percentile(&posts, 0.99),
        send_lag_p99_ms: percentile(&lags, 0.99),
        api_cpu_us_per_job: api_cpu * 1e6 / sent,
        worker_cpu_us_per_job: worker_cpu * 1e6 / sent,
        harness_cpu_us_per_job: own_cpu * 1e6 / sent,
        sut_cpu_busy_pct: busy,
        redis_cpu_us_per_job: delta.cpu_secs * 1e6 / sent,
        redis_cmds_per_job: delta.total_calls() as f64 / sent,
    })
}

/// Reads the socket, recording each `succeeded` event's arrival. Ends once it
/// has been told which jobs to wait for and has seen them all, when told to
/// stop, or when the socket ends.
async fn read(mut socket: Socket, expect: oneshot::Receiver<HashSet<String>>, stop: oneshot::Receiver<()>) -> Reading {
    let mut succeeded: HashMap<String, Instant> = HashMap::new();
    let mut waiting: Option<HashSet<String>> = None;
    let mut closed = None;
    let (mut expect, mut stop) = (expect, stop);
    loop {
        if waiting.as_ref().is_some_and(HashSet::is_empty) {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            ids = &mut expect, if waiting.is_none() => {
                let mut ids = ids.unwrap_or_default();
                ids.retain(|id| !succeeded.contains_key(id));
                waiting = Some(ids);
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let arrived = Instant::now();
                    if let Some(m) = events_client::parse(text.as_str())
                        && m.is_event()
                        && m.status.as_deref() == Some("succeeded")
                        && let Some(job) = m.job_id
                    {
                        if let Some(waiting) = waiting.as_mut() {
                            waiting.remove(job.as_ref());
                        }
                        succeeded.insert(job.into_owned(), arrived);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    closed = Some(events_client::close_code(frame.as_ref()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    closed = Some(ABNORMAL_CLOSE);
                    break;
                }
            },
        }
    }
    if closed.is_none() {
        events_client::close(socket).await;
    }
    Reading { succeeded, closed }
}
