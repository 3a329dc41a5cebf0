//! The interleaved sequence: for each round, ours (HTTP enqueue, then the
//! worker drains those jobs), ours again (library enqueue), then each peer —
//! Redis flushed and our processes restarted before every run — and then the
//! rounds of workload 3 (HTTP latency), 4 (end to end over WebSocket) and 6
//! (fan-out), ours only.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::auth;
use crate::measure::{E2eRun, FanoutRun, LatencyRun, Measurement};
use crate::ours::Ours;
use crate::peers::{Peer, PeerEnv};
use crate::procs::Pinning;
use crate::redis_server::{BenchRedis, Persistence};
use crate::report::{Results, Setup};
use crate::workloads::{Params, e2e, enqueue, fanout, latency, process};

/// Workload 3's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LatencyPlan {
    pub rates: Vec<u32>,
    pub secs: f64,
    pub warmup_secs: f64,
    pub rounds: usize,
}

/// Workload 4's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct E2ePlan {
    /// Jobs per second.
    pub rates: Vec<u32>,
    /// Measured seconds per rate.
    pub secs: f64,
    pub warmup_secs: f64,
    /// Rounds, each with a fresh API, worker and Redis.
    pub rounds: usize,
    /// After the last job is sent, how long `succeeded` events may take before the rest count as lost.
    pub timeout_secs: f64,
}

/// Workload 6's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FanoutPlan {
    /// Subscriber counts, one run each.
    pub subscribers: Vec<u64>,
    /// Deliveries per second to offer, one run each (for every subscriber count):
    /// the job rate is this ÷ (3 events × subscribers).
    pub offered: Vec<f64>,
    /// Seconds of jobs per run.
    pub secs: f64,
    /// Rounds, each with a fresh API, worker and Redis per subscriber count.
    pub rounds: usize,
    /// Socket opens per second.
    pub connect_rate: u32,
    /// Loopback source addresses to spread the sockets over (127.0.0.1 …).
    pub source_ips: u8,
    /// After the last job is sent, how long deliveries may take before the rest count as lost.
    pub timeout_secs: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub params: Params,
    /// Rounds of the interleaved sequence (0 = skip workloads 1 and 2).
    pub pairs: usize,
    pub peers: Vec<Peer>,
    pub library: bool,
    pub latency: Option<LatencyPlan>,
    pub e2e: Option<E2ePlan>,
    pub fanout: Option<FanoutPlan>,
    pub persistence: Persistence,
    /// Replicas of our Redis to run (the API waits for them with `--api-env ENQUEUE_WAIT_REPLICAS=n`).
    pub replicas: usize,
    pub pinning: Pinning,
    pub ours: OursLaunch,
    pub peer_env: PeerEnv,
    pub results_dir: PathBuf,
}

/// How to start ours; the Redis URL is filled in once Redis runs.
#[derive(Debug, Clone)]
pub struct OursLaunch {
    pub launch: crate::ours::Launch,
    pub api_env: Vec<(String, String)>,
}

/// Runs the plan and returns every measurement (nothing is written here).
pub async fn execute(plan: &Plan) -> anyhow::Result<Results> {
    let redis = BenchRedis::start(plan.persistence, plan.pinning.redis_cpu).await?;
    let mut replicas = Vec::with_capacity(plan.replicas);
    for _ in 0..plan.replicas {
        replicas.push(BenchRedis::start_replica_of(&redis, plan.pinning.redis_cpu).await?);
    }
    let ours = Ours::for_plan(plan, redis.url());
    let log_dir = &ours.log_dir;
    let token = auth::token_for(ours.api_binary().as_deref(), &ours.jwt_secret)?;
    let tokens = if plan.params.tenants > 1 {
        auth::tokens(&ours.jwt_secret, &auth::tenants(plan.params.tenants))?
    } else {
        vec![token.clone()]
    };
    let mut results = Results::new(Setup::describe(plan));
    for &peer in &plan.peers {
        plan.peer_env.install(peer).with_context(|| format!("cannot install the {} peer", peer.name()))?;
    }

    for pair in 0..plan.pairs {
        redis.flush().await?;
        let api = ours.start_api().await?;
        let enqueued = enqueue::http(&api, &redis, &tokens, &plan.params, pair).await;
        api.stop().await;
        record(&mut results, enqueued.context("ours: HTTP enqueue")?);
        record(&mut results, process::drain(&ours, &redis, &plan.params, pair).await.context("ours: processing")?);
        if plan.library {
            redis.flush().await?;
            record(&mut results, enqueue::library(&redis, &plan.params, pair).await.context("ours: library enqueue")?);
        }
        for &peer in &plan.peers {
            redis.flush().await?;
            let run = plan
                .peer_env
                .run(peer, &redis.url(), plan.pinning.sut_cpu, &plan.params, pair, log_dir)
                .await
                .with_context(|| format!("peer {}", peer.name()))?;
            results.setup.versions.insert(peer.name().to_owned(), format!("{} ({})", run.version, run.runtime));
            record(&mut results, run.enqueue);
            record(&mut results, run.process);
        }
    }

    if let Some(latency_plan) = &plan.latency {
        for round in 0..latency_plan.rounds {
            redis.flush().await?;
            let api = ours.start_api().await?;
            for &rate in &latency_plan.rates {
                let run =
                    latency::at_rate(&api, &redis, &token, rate, latency_plan.secs, latency_plan.warmup_secs, round)
                        .await;
                match run {
                    Ok(run) => record_latency(&mut results, run),
                    Err(err) => {
                        api.stop().await;
                        return Err(err.context(format!("latency at {rate}/s")));
                    }
                }
            }
            api.stop().await;
        }
    }

    if let Some(e2e_plan) = &plan.e2e {
        for round in 0..e2e_plan.rounds {
            redis.flush().await?;
            let api = ours.start_api().await?;
            let worker = ours.start_worker(plan.params.concurrency, plan.params.claim_batch)?;
            let target =
                e2e::Target { api: &api, worker: &worker, redis: &redis, token: &token, sut_cpu: plan.pinning.sut_cpu };
            let mut outcome = Ok(());
            for &rate in &e2e_plan.rates {
                match e2e::at_rate(&target, e2e_plan, rate, round).await {
                    Ok(run) => record_e2e(&mut results, run),
                    Err(err) => {
                        outcome = Err(err.context(format!("end to end at {rate} jobs/s")));
                        break;
                    }
                }
            }
            worker.stop().await;
            api.stop().await;
            outcome?;
        }
    }

    if let Some(fanout_plan) = &plan.fanout {
        for round in 0..fanout_plan.rounds {
            for &subscribers in &fanout_plan.subscribers {
                for &offered in &fanout_plan.offered {
                    redis.flush().await?;
                    let api = ours.start_api().await?;
                    let worker = ours.start_worker(plan.params.concurrency, plan.params.claim_batch)?;
                    let target = e2e::Target {
                        api: &api,
                        worker: &worker,
                        redis: &redis,
                        token: &token,
                        sut_cpu: plan.pinning.sut_cpu,
                    };
                    let run = fanout::with_subscribers(&target, fanout_plan, subscribers, offered, round).await;
                    worker.stop().await;
                    api.stop().await;
                    let run = run.with_context(|| format!("fan-out to {subscribers} subscribers at {offered}/s"))?;
                    record_fanout(&mut results, run);
                }
            }
        }
    }
    Ok(results)
}

fn record(results: &mut Results, m: Measurement) {
    eprintln!(
        "bench: round {} {:<7} {:<26} {:>9.0} jobs/s  redis {:>6.1} µs/job {:>6.2} cmds/job  process {:>6.1} µs/job",
        m.pair + 1,
        m.system,
        m.workload.title(),
        m.jobs_per_sec,
        m.redis_cpu_us_per_job,
        m.redis_cmds_per_job,
        m.process_cpu_us_per_job
    );
    results.measurements.push(m);
}

fn record_latency(results: &mut Results, run: LatencyRun) {
    eprintln!(
        "bench: latency round {} {:>5}/s  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  errors {}  (send lag p99 {:.3} ms)",
        run.round + 1,
        run.rate,
        run.p50_ms,
        run.p99_ms,
        run.max_ms,
        run.errors,
        run.send_lag_p99_ms
    );
    results.latency.push(run);
}

fn record_e2e(results: &mut Results, run: E2eRun) {
    eprintln!(
        "bench: e2e round {} {:>5} jobs/s  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  lost {}  post errors {}  closed {:?}",
        run.round + 1,
        run.rate,
        run.p50_ms,
        run.p99_ms,
        run.max_ms,
        run.lost,
        run.post_errors,
        run.subscriber_closed
    );
    results.e2e.push(run);
}

fn record_fanout(results: &mut Results, run: FanoutRun) {
    eprintln!(
        "bench: fan-out round {} {:>5} subscribers ({} connected in {:.1} s)  {:.1} jobs/s  delivered {:.0}/s of {:.0}/s  \
         p50 {:.3} ms  p99 {:.3} ms  max {:.1} ms  lost {}  closed 1013: {}  other: {}",
        run.round + 1,
        run.subscribers,
        run.connected,
        run.connect_secs,
        run.job_rate,
        run.delivered_per_sec,
        run.offered_per_sec,
        run.p50_ms,
        run.p99_ms,
        run.max_ms,
        run.lost,
        run.closed_slow,
        run.closed_other
    );
    results.fanout.push(run);
}
