//! Command line: `cargo run --release -p bench -- <command> [options]`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::peers::Peer;
use crate::workloads::hostile::Attack;

/// Benchmarks our job system (api + worker on Redis) side by side with BullMQ
/// and Celery on the same machine and the same Redis.
///
/// The harness starts its own redis-server on a free loopback port, pinned to
/// one CPU, and runs everything else (our api and worker, the peers, and
/// itself) pinned to the other. Systems alternate run by run (ours, BullMQ,
/// Celery, ours, …), Redis is flushed before each run, and every figure is
/// reported as the median of the runs with min–max. Results go to
/// `<results-dir>/results.{json,md}` and `bench.svg`.
#[derive(Parser, Debug)]
#[command(name = "bench", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything: workloads 1 and 2 for ours and the peers (interleaved), then
    /// for ours workload 3 (HTTP latency), 4 (end to end over WebSocket) and 6
    /// (WebSocket fan-out). Skip parts with --no-latency, --no-e2e, --no-fanout.
    Run(Options),
    /// Workloads 1 (bulk enqueue) and 2 (processing) only.
    Throughput(Options),
    /// Workload 3 only: open-loop `POST /v1/jobs` at fixed rates.
    Latency(Options),
    /// Workload 4 only: open-loop `POST /v1/jobs`, one worker, and the time until
    /// each job's `succeeded` event reaches a WebSocket subscriber.
    E2e(Options),
    /// Workload 6 only: 1,000 and 5,000 WebSocket subscribers of one tenant while
    /// jobs go through; deliveries per second and delivery latency.
    Fanout(Options),
    /// Hostile tenants: for each attack, the victim tenant's enqueue and start
    /// latency without and with the attacker, Redis CPU and memory, and the
    /// answers that stopped the attacker; default limits (rate limits included).
    /// Writes hostile.json and hostile.md.
    Hostile(Options),
    /// Redis time per script call of our system, from SLOWLOG (threshold 0): which
    /// scripts dominate Redis CPU. Slows Redis down; not a throughput figure.
    Profile(Options),
    /// Re-renders results.md and bench.svg from a results.json.
    Report {
        /// The results.json to read.
        #[arg(long, default_value = "target/bench-results/results.json")]
        input: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Jobs per run (workloads 1 and 2).
    #[arg(long, default_value_t = 50_000)]
    pub jobs: u64,
    /// Rounds of the interleaved sequence; each round runs every system once.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Peers to compare with, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bullmq,celery")]
    pub peers: Vec<Peer>,
    /// Run ours only.
    #[arg(long)]
    pub no_peers: bool,
    /// Skip our library enqueue (`JobStore::enqueue` from the harness).
    #[arg(long)]
    pub no_library: bool,
    /// Jobs per enqueue call: HTTP batch, `JobStore::enqueue`, `addBulk`, Celery producer batch.
    #[arg(long, default_value_t = 1_000)]
    pub chunk: usize,
    /// Enqueue calls in flight at once (ours and BullMQ; Celery's producer is sequential).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Jobs one worker runs at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: u32,
    /// CLAIM_BATCH for our worker (default: the worker's own, min(concurrency, 200)).
    #[arg(long)]
    pub claim_batch: Option<u32>,
    /// Progress poll interval while a worker drains, ms.
    #[arg(long, default_value_t = 25)]
    pub poll_ms: u64,
    /// A phase that takes longer fails, seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Run Redis with its append-only file (appendfsync everysec), as in production.
    #[arg(long)]
    pub durable: bool,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// CPU for redis-server.
    #[arg(long, default_value_t = 0)]
    pub redis_cpu: usize,
    /// CPU for everything else: our api and worker, the peers, the harness itself.
    #[arg(long, default_value_t = 1)]
    pub sut_cpu: usize,
    /// CPU for the harness itself (load generator, HTTP client, WebSocket
    /// subscribers), default: --sut-cpu. A diagnostic: the standard runs keep
    /// it with the system under test.
    #[arg(long)]
    pub harness_cpu: Option<usize>,
    /// Directory with the `api` and `worker` binaries (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where results go.
    #[arg(long, default_value = "target/bench-results")]
    pub results_dir: PathBuf,
    /// The peer scripts (`bench/peers`).
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// Python venv for the Celery peer (created if missing).
    #[arg(long, default_value = "target/bench-venv")]
    pub venv: PathBuf,
    /// Request rates of workload 3, requests/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    pub rates: Vec<u32>,
    /// Measured seconds per rate.
    #[arg(long, default_value_t = 10.0)]
    pub latency_secs: f64,
    /// Seconds sent before measuring, per rate.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Rounds of workload 3 (a fresh API and Redis each).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip workload 3 in `run`.
    #[arg(long)]
    pub no_latency: bool,
    /// Skip workload 4 in `run`.
    #[arg(long)]
    pub no_e2e: bool,
    /// Skip workload 6 in `run`.
    #[arg(long)]
    pub no_fanout: bool,
    /// Job rates of workload 4, jobs/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    pub e2e_rates: Vec<u32>,
    /// Measured seconds per rate of workload 4 (after --warmup-secs).
    #[arg(long, default_value_t = 5.0)]
    pub e2e_secs: f64,
    /// Rounds of workload 4 (a fresh API, worker and Redis each).
    #[arg(long, default_value_t = 3)]
    pub e2e_rounds: usize,
    /// Subscriber counts of workload 6, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub subscribers: Vec<u64>,
    /// Deliveries per second workload 6 offers, comma-separated, one run each: the
    /// job rate is this ÷ (3 events × subscribers). One level the API keeps up
    /// with (latency), one it does not (capacity).
    #[arg(long, value_delimiter = ',', default_value = "50000,200000")]
    pub fanout_offered: Vec<f64>,
    /// Seconds of jobs per run of workload 6.
    #[arg(long, default_value_t = 5.0)]
    pub fanout_secs: f64,
    /// Rounds of workload 6 (a fresh API, worker and Redis per run).
    #[arg(long, default_value_t = 3)]
    pub fanout_rounds: usize,
    /// WebSocket opens per second in workload 6.
    #[arg(long, default_value_t = 1_000)]
    pub connect_rate: u32,
    /// Loopback source addresses the fan-out's sockets are spread over (127.0.0.1 …).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub source_ips: u8,
    /// Workloads 4 and 6: how long events may take after the last job is sent
    /// before the missing ones count as lost, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub event_timeout_secs: f64,
    /// Tenants our jobs are spread over (workloads 1 and 2): each enqueue request
    /// is the next tenant's, so tenants share the queue and take turns in claims.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
    /// Replicas of our Redis to run beside it, on the Redis CPU; with `--api-env
    /// ENQUEUE_WAIT_REPLICAS=1` every enqueue waits for them (its cost).
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// Attacks of `hostile`, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = Attack::ALL)]
    pub attacks: Vec<Attack>,
    /// Seconds of each `hostile` phase (baseline, then under attack).
    #[arg(long, default_value_t = 8.0)]
    pub hostile_secs: f64,
    /// Extra environment for our API, KEY=VALUE (repeatable). Rate limits are set
    /// out of the way by default (RATE_LIMIT_PER_SEC, RATE_LIMIT_BURST, and for the
    /// fan-out's one tenant WS_MAX_PER_TENANT, WS_MAX_CONNECTIONS = 1000000),
    /// except in `hostile`, which tests the defaults.
    #[arg(long = "api-env", value_parser = parse_key_value)]
    pub api_env: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("use KEY=VALUE")?;
    Ok((key.to_owned(), value.to_owned()))
}
