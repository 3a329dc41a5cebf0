//! `bench`: the benchmark harness. It measures our job system — the real `api`
//! and `worker` binaries over Redis — side by side with BullMQ and Celery, on
//! one `redis-server` it starts itself, and writes JSON, Markdown and an SVG plot.
//!
//! Layout:
//! - `cli.rs` — the command line, and the [`run::Plan`] it describes;
//! - `run.rs` — the interleaved sequence of runs;
//! - `workloads/` — one measured phase each: enqueue, processing, latency,
//!   end to end, fan-out over WebSocket, and hostile tenants;
//! - `ours.rs`, `peers.rs` — starting the systems under test;
//! - `redis_server.rs`, `procs.rs` — Redis and child processes, pinned with `taskset`;
//! - `redis_stats.rs`, `measure.rs` — `INFO` deltas and per-job figures;
//! - `profile.rs` — Redis time per script (SLOWLOG);
//! - `report.rs`, `markdown.rs`, `plot.rs` — results.json, results.md, bench.svg;
//! - `events_client.rs` — a WebSocket client of `GET /v1/events`;
//! - `auth.rs` — the bearer token the API requires.

pub mod auth;
pub mod cli;
pub mod events_client;
pub mod markdown;
pub mod measure;
pub mod ours;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod profile;
pub mod redis_server;
pub mod redis_stats;
pub mod report;
pub mod run;
pub mod workloads;

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::{Command, Options};
use crate::ours::Launch;
use crate::peers::PeerEnv;
use crate::procs::Pinning;
use crate::redis_server::Persistence;
use crate::run::{E2ePlan, FanoutPlan, LatencyPlan, OursLaunch, Plan};
use crate::workloads::Params;

/// Which workloads a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Throughput,
    Latency,
    E2e,
    Fanout,
    /// The hostile-tenant workload: ours with its default limits.
    Hostile,
}

impl Options {
    /// The pinning these options ask for.
    pub fn pinning(&self) -> Pinning {
        if self.no_pin {
            Pinning::NONE
        } else {
            Pinning {
                redis_cpu: Some(self.redis_cpu),
                sut_cpu: Some(self.sut_cpu),
                harness_cpu: Some(self.harness_cpu.unwrap_or(self.sut_cpu)),
            }
        }
    }

    pub fn plan(&self, scope: Scope) -> anyhow::Result<Plan> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()?.parent().context("the bench binary has no directory")?.to_path_buf(),
        };
        for binary in ["api", "worker"] {
            anyhow::ensure!(
                bin_dir.join(binary).exists(),
                "no `{binary}` binary in {}: build it first (`cargo build --release -p api -p worker`) or pass --bin-dir",
                bin_dir.display()
            );
        }
        // Out of the way of throughput, except where the limits are what is measured.
        let mut api_env = if scope == Scope::Hostile {
            Vec::new()
        } else {
            vec![
                ("RATE_LIMIT_PER_SEC".to_owned(), "1000000".to_owned()),
                ("RATE_LIMIT_BURST".to_owned(), "1000000".to_owned()),
                // The fan-out's thousands of subscribers are one tenant's.
                ("WS_MAX_PER_TENANT".to_owned(), "1000000".to_owned()),
                ("WS_MAX_CONNECTIONS".to_owned(), "1000000".to_owned()),
            ]
        };
        api_env.extend(self.api_env.iter().cloned());
        let throughput = matches!(scope, Scope::All | Scope::Throughput);
        let latency = scope == Scope::Latency || (scope == Scope::All && !self.no_latency);
        let e2e = scope == Scope::E2e || (scope == Scope::All && !self.no_e2e);
        let fanout = scope == Scope::Fanout || (scope == Scope::All && !self.no_fanout);
        Ok(Plan {
            params: Params {
                jobs: self.jobs,
                chunk: self.chunk.max(1),
                inflight: self.inflight.max(1),
                concurrency: self.concurrency,
                claim_batch: self.claim_batch,
                poll_ms: self.poll_ms.max(1),
                timeout_secs: self.timeout_secs,
                tenants: self.tenants.max(1),
            },
            pairs: if throughput { self.pairs } else { 0 },
            peers: if self.no_peers { Vec::new() } else { self.peers.clone() },
            library: !self.no_library,
            latency: latency.then(|| LatencyPlan {
                rates: self.rates.clone(),
                secs: self.latency_secs,
                warmup_secs: self.warmup_secs,
                rounds: self.rounds,
            }),
            e2e: e2e.then(|| E2ePlan {
                rates: self.e2e_rates.clone(),
                secs: self.e2e_secs,
                warmup_secs: self.warmup_secs,
                rounds: self.e2e_rounds,
                timeout_secs: self.event_timeout_secs,
            }),
            fanout: fanout.then(|| FanoutPlan {
                subscribers: self.subscribers.clone(),
                offered: self.fanout_offered.clone(),
                secs: self.fanout_secs,
                rounds: self.fanout_rounds,
                connect_rate: self.connect_rate,
                source_ips: self.source_ips,
                timeout_secs: self.event_timeout_secs,
            }),
            persistence: if self.durable { Persistence::AofEverysec } else { Persistence::Off },
            replicas: self.replicas,
            pinning: self.pinning(),
            ours: OursLaunch { launch: Launch::Binaries(bin_dir), api_env },
            peer_env: PeerEnv {
                dir: self
                    .peers_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))),
                venv: self.venv.clone(),
            },
            results_dir: self.results_dir.clone(),
        })
    }
}

/// Runs one command of the CLI.
pub async fn execute(command: Command) -> anyhow::Result<()> {
    let (options, scope) = match command {
        Command::Report { input } => {
            let results: report::Results = serde_json::from_slice(
                &std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?,
            )?;
            let dir = input.parent().context("results.json has no directory")?;
            results.write(dir)?;
            println!("{}", markdown::render(&results));
            return Ok(());
        }
        Command::Profile(options) => {
            let plan = options.plan(Scope::Throughput)?;
            let text = profile::run(&plan).await?;
            std::fs::create_dir_all(&plan.results_dir)?;
            std::fs::write(plan.results_dir.join("profile.md"), &text)?;
            println!("{text}");
            return Ok(());
        }
        Command::Hostile(options) => {
            let plan = options.plan(Scope::Hostile)?;
            let results = workloads::hostile::run(&plan, &options.attacks, options.hostile_secs).await?;
            results.write(&plan.results_dir)?;
            println!("{}", results.markdown());
            eprintln!("bench: results in {}", plan.results_dir.display());
            return Ok(());
        }
        Command::Run(options) => (options, Scope::All),
        Command::Throughput(options) => (options, Scope::Throughput),
        Command::Latency(options) => (options, Scope::Latency),
        Command::E2e(options) => (options, Scope::E2e),
        Command::Fanout(options) => (options, Scope::Fanout),
    };
    let plan = options.plan(scope)?;
    let results = run::execute(&plan).await?;
    results.write(&plan.results_dir)?;
    println!("{}", markdown::render(&results));
    eprintln!("bench: results in {}", plan.results_dir.display());
    Ok(())
}
