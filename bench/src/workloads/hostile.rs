//! The hostile-tenant workload: does one tenant's abuse slow, starve or fill the
//! deployment for another? For each attack, two phases, each on a fresh Redis,
//! API and one worker (concurrency 10) with the product's default limits: the
//! victim alone (baseline), then the victim beside the attacker.
//!
//! The victim (tenant `victim`) submits single `noop` jobs at 20/s, open loop,
//! to the default queue. Its figures: the enqueue latency of those POSTs (from
//! each one's scheduled time), and the start latency of its jobs, `started_at −
//! created_at` (both Redis's clock), read over REST once the phase is over. A
//! job not started within the phase + 10 s counts as not started. Per phase
//! also Redis's CPU (its process, over the phase) and `used_memory`, and every
//! answer the attacker got, by status and code: the limit that stopped it.
//!
//! `attacks.rs` holds the attacks, `victim.rs` the victim's side, `report.rs`
//! hostile.json and hostile.md.

mod attacks;
mod report;
mod victim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::auth;
use crate::ours::{Ours, RunningApi, RunningWorker};
use crate::procs::{CpuOf, CpuTicks, cpu_secs};
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;
use crate::report::{Machine, Setup};
use crate::run::Plan;

/// The worker's concurrency in every phase.
const CONCURRENCY: u32 = 10;
/// The victim's job rate, jobs/s.
const VICTIM_RATE: f64 = 20.0;
/// How long after the phase a victim job may still start.
const START_GRACE: Duration = Duration::from_secs(10);
const VICTIM: &str = "victim";
const ATTACKER: &str = "attacker";
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Commands listed per phase, by Redis time.
const BUSIEST_COMMANDS: usize = 6;

/// One attack of tenant `attacker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Batches of 1,000 `noop` jobs, each naming a new queue.
    QueueNameFlood,
    /// Batches of ~60 KiB jobs due in a day, until refused.
    ByteFlood,
    /// Batches of 1,000 `noop` jobs due in a year.
    FarFutureFlood,
    /// 5,000 `sleep` jobs of 50 ms on the victim's queue, queued just before it starts.
    LongJobs,
    /// 200 event sockets that never read, while 200 jobs/s make events.
    NonReadingSockets,
    /// 50 event sockets with `since=0-0:0`, reconnecting in a loop.
    ReplayFlood,
    /// 2,000 failed jobs, then `retry-failed` in a loop.
    RetryFailedLoop,
}

impl Attack {
    pub const ALL: &str =
        "queue-name-flood,byte-flood,far-future-flood,long-jobs,non-reading-sockets,replay-flood,retry-failed-loop";

    fn name(self) -> &'static str {
        match self {
            Attack::QueueNameFlood => "queue-name flood",
            Attack::ByteFlood => "byte flood",
            Attack::FarFutureFlood => "far-future flood",
            Attack::LongJobs => "long-job monopolisation",
            Attack::NonReadingSockets => "non-reading sockets",
            Attack::ReplayFlood => "replay flood",
            Attack::RetryFailedLoop => "retry-failed loop",
        }
    }

    /// The attacker's scopes: `email.send` is the one type a payload can be padded in.
    fn scope(self) -> &'static str {
        match self {
            Attack::ByteFlood => "jobs:write jobs:read email:send",
            _ => "jobs:write jobs:read",
        }
    }
}

/// Answers counted by key (`202`, `429 rate_limited`, `ws closed 1013`), and
/// other counts (`jobs accepted`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn count(&mut self, key: String) {
        *self.0.entry(key).or_default() += 1;
    }

    fn add(&mut self, key: &str, n: u64) {
        *self.0.entry(key.to_owned()).or_default() += n;
    }

    fn merge(&mut self, other: Tally) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    fn render(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(key, n)| format!("{key} ×{n}")).collect();
        if parts.is_empty() { "—".into() } else { parts.join(", ") }
    }
}

/// What the victim saw in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct VictimFigures {
    pub sent: u64,
    pub accepted: u64,
    /// Answers other than 202, by key.
    pub refused: Tally,
    pub enqueue_p50_ms: f64,
    pub enqueue_p99_ms: f64,
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
    pub start_max_ms: f64,
    pub not_started: u64,
}

/// One phase: the victim alone or beside the attacker.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub secs: f64,
    pub victim: VictimFigures,
    /// Redis's process CPU over the phase, percent of one core.
    pub redis_cpu_pct: f64,
    /// The commands Redis spent most time in over the phase and after it (the
    /// attacker's wind-down included): (name, calls, µs); scripts show as
    /// `evalsha`, the commands inside them under their own names as well.
    pub redis_busiest: Vec<(String, u64, u64)>,
    /// CPU used on the machine by processes other than ours (Redis, API, worker,
    /// harness) over the phase, percent of one core: noise when well above 0.
    pub other_cpu_pct: f64,
    pub redis_used_memory_end: u64,
    pub redis_used_memory_peak: u64,
    /// Answers to the attacker's preparation (before the victim started).
    pub attacker_prepare: Tally,
    pub attacker: Tally,
    /// The API process's peak resident memory (VmHWM), bytes.
    pub api_rss_peak: u64,
    /// The attacker's `live` jobs and stored `bytes`, and its queues, at the end.
    pub attacker_usage: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttackFigures {
    pub attack: Attack,
    pub baseline: PhaseFigures,
    pub attacked: PhaseFigures,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostileResults {
    pub started_at: String,
    pub command: String,
    pub machine: Machine,
    pub nproc: usize,
    pub versions: BTreeMap<String, String>,
    pub secs: f64,
    pub attacks: Vec<AttackFigures>,
}

/// Runs every attack of `attacks`, each phase `secs` long.
pub async fn run(plan: &Plan, attacks: &[Attack], secs: f64) -> anyhow::Result<HostileResults> {
    let setup = Setup::describe(plan);
    let mut results = HostileResults {
        started_at: setup.started_at,
        command: format!("cargo run --release -p bench -- {}", std::env::args().skip(1).collect::<Vec<_>>().join(" ")),
        nproc: std::thread::available_parallelism().map_or(0, usize::from).max(setup.machine.cpus),
        machine: setup.machine,
        versions: setup.versions,
        secs,
        attacks: Vec::new(),
    };
    for &attack in attacks {
        eprintln!("bench: hostile: {} — baseline", attack.name());
        let baseline =
            phase(plan, attack, false, secs).await.with_context(|| format!("{}: baseline", attack.name()))?;
        eprintln!("bench: hostile: {} — under attack", attack.name());
        let attacked = phase(plan, attack, true, secs).await.with_context(|| format!("{}: attacked", attack.name()))?;
        results.attacks.push(AttackFigures { attack, baseline, attacked });
    }
    Ok(results)
}

/// One phase on a fresh Redis, API and worker.
async fn phase(plan: &Plan, attack: Attack, attacked: bool, secs: f64) -> anyhow::Result<PhaseFigures> {
    let redis = BenchRedis::start(plan.persistence, plan.pinning.redis_cpu).await?;
    let ours = Ours::for_plan(plan, redis.url());
    let api = ours.start_api().await?;
    let worker = ours.start_worker(CONCURRENCY, None)?;
    let mut figures = measure(&ours, &api, &worker, &redis, attacked.then_some(attack), secs).await;
    if let (Ok(figures), CpuOf::Pid(pid)) = (figures.as_mut(), api.cpu) {
        figures.api_rss_peak = peak_rss(pid);
    }
    worker.stop().await;
    api.stop().await;
    figures
}

async fn measure(
    ours: &Ours,
    api: &RunningApi,
    worker: &RunningWorker,
    redis: &BenchRedis,
    attack: Option<Attack>,
    secs: f64,
) -> anyhow::Result<PhaseFigures> {
    let base = api.base.as_str();
    let victim_token = auth::mint(&ours.jwt_secret, VICTIM, "jobs:write jobs:read", TOKEN_TTL)?;
    let victim_http = super::http_client()?;
    let queue = super::noop_queue();
    victim::warm_up(&victim_http, base, &victim_token).await.context("the victim's first job")?;

    let scope = attack.map_or("jobs:read", Attack::scope);
    let attacker_token = auth::mint(&ours.jwt_secret, ATTACKER, scope, TOKEN_TTL)?;
    let mut attacker = attacks::Attacker {
        http: super::http_client()?,
        base,
        token: &attacker_token,
        tenant: ATTACKER,
        victim_queue: &queue,
        redis: redis.connect().await?,
    };
    let attacker_prepare = match attack {
        Some(attack) => attacker.prepare(attack).await.context("preparing the attack")?,
        None => Tally::default(),
    };

    let ours_cpu = [redis.cpu_of(), api.cpu, worker.cpu, CpuOf::ThisProcess];
    let mut conn = redis.connect().await?;
    let commands_before = RedisSample::read(&mut conn).await?;
    let (redis_cpu_before, ours_before, machine_before) =
        (cpu_secs(redis.cpu_of())?, cpu_of(&ours_cpu)?, CpuTicks::read(None)?);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let attacking = async {
        match attack {
            Some(attack) => attacker.run(attack, until).await,
            None => Tally::default(),
        }
    };
    // Redis's CPU over the phase itself, not the attacker's wind-down after it.
    let redis_cpu = async {
        tokio::time::sleep_until(until.into()).await;
        let wall = started.elapsed().as_secs_f64();
        let redis_cpu = cpu_secs(redis.cpu_of())? - redis_cpu_before;
        let ours = cpu_of(&ours_cpu)? - ours_before;
        let machine = CpuTicks::read(None)?.busy.saturating_sub(machine_before.busy) as f64 / TICKS_PER_SEC;
        anyhow::Ok((redis_cpu * 100.0 / wall, (machine - ours).max(0.0) * 100.0 / wall))
    };
    let (posted, attacker_tally, redis_cpu_pct) =
        tokio::join!(victim::submit(&victim_http, base, &victim_token, secs), attacking, redis_cpu);
    let (posted, (redis_cpu_pct, other_cpu_pct)) = (posted?, redis_cpu_pct?);
    let mut busiest =
        commands_before.delta(&RedisSample::read(&mut conn).await?).commands.into_iter().collect::<Vec<_>>();
    busiest.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
    busiest.truncate(BUSIEST_COMMANDS);
    let memory: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let attacker_usage = usage(&mut conn).await?;

    let victim = victim::figures(&victim_http, base, &victim_token, posted, Instant::now() + START_GRACE).await;
    Ok(PhaseFigures {
        secs,
        victim,
        redis_cpu_pct,
        other_cpu_pct,
        redis_busiest: busiest.into_iter().map(|(name, (calls, usec))| (name, calls, usec)).collect(),
        redis_used_memory_end: info_field(&memory, "used_memory"),
        redis_used_memory_peak: info_field(&memory, "used_memory_peak"),
        attacker_prepare,
        attacker: attacker_tally,
        attacker_usage,
        api_rss_peak: 0,
    })
}

/// The attacker's usage (`live`, `bytes`) and how many queues it has jobs in.
async fn usage(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<BTreeMap<String, u64>> {
    let keys = super::keys();
    let (live, bytes, queues): (Option<u64>, Option<u64>, u64) = redis::pipe()
        .hget(keys.tenant_usage(ATTACKER), "live")
        .hget(keys.tenant_usage(ATTACKER), "bytes")
        .scard(keys.tenant_queues(ATTACKER))
        .query_async(conn)
        .await?;
    Ok(BTreeMap::from([
        ("live jobs".to_owned(), live.unwrap_or(0)),
        ("stored bytes".to_owned(), bytes.unwrap_or(0)),
        ("queues".to_owned(), queues),
    ]))
}

/// USER_HZ: /proc/stat counts jiffies of 1/100 s.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds used so far by these processes together.
fn cpu_of(processes: &[CpuOf]) -> anyhow::Result<f64> {
    processes.iter().map(|&of| cpu_secs(of)).sum()
}

/// A process's peak resident set (`VmHWM` in /proc/<pid>/status), bytes; 0 if unreadable.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib =
        status.lines().find_map(|line| line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok());
    kib.unwrap_or(0u64) * 1024
}

/// A numeric field of an `INFO` reply (0 if absent).
fn info_field(info: &str, name: &str) -> u64 {
    info.lines().find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':')?.parse().ok()).unwrap_or(0)
}
