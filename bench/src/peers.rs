//! The peers, run as subprocesses against the same (just flushed) Redis:
//! BullMQ (`bench/peers/bullmq`, Node) and Celery (`bench/peers/celery`, Python).
//!
//! Each peer script does workload 1 then workload 2 and prints one JSON object
//! with the raw `INFO cpu commandstats` text before and after each phase and its
//! own CPU seconds; the figures are computed here, by the same code as ours.
//! Dependencies are installed on first use: `npm ci` into the peer's
//! `node_modules`, `pip install` into a venv under `target/` (both ignored by git).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::measure::{Measurement, Workload};
use crate::procs::pinned_command;
use crate::redis_stats::RedisSample;
use crate::workloads::Params;

/// A system we compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Bullmq,
    Celery,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Bullmq => "bullmq",
            Peer::Celery => "celery",
        }
    }
}

/// Where the peer scripts and their installed dependencies live.
#[derive(Debug, Clone)]
pub struct PeerEnv {
    /// `bench/peers`.
    pub dir: PathBuf,
    /// The Python venv for Celery.
    pub venv: PathBuf,
}

#[derive(Deserialize)]
struct PeerReport {
    version: String,
    runtime: String,
    enqueue: PhaseReport,
    process: PhaseReport,
}

#[derive(Deserialize)]
struct PhaseReport {
    jobs: u64,
    secs: f64,
    cpu_secs: f64,
    info_before: String,
    info_after: String,
}

/// A peer's two measurements and what it ran on.
pub struct PeerRun {
    pub version: String,
    pub runtime: String,
    pub enqueue: Measurement,
    pub process: Measurement,
}

impl PeerEnv {
    /// Installs the peer's dependencies unless they are there already.
    pub fn install(&self, peer: Peer) -> anyhow::Result<()> {
        match peer {
            Peer::Bullmq => {
                let dir = self.dir.join("bullmq");
                if !dir.join("node_modules/bullmq/package.json").exists() {
                    // --ignore-scripts: msgpackr-extract's native build is skipped; msgpackr
                    // then uses its pure-JS path, as in the reference BullMQ measurements.
                    run(Command::new("npm")
                        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                        .current_dir(&dir))
                    .context("npm ci for the BullMQ peer (needs node and npm)")?;
                }
            }
            Peer::Celery => {
                let python = self.venv.join("bin/python");
                if !python.exists() {
                    // Debian's python3 is built with PGO; a pyenv shim may not be.
                    let base = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
                    run(Command::new(base).arg("-m").arg("venv").arg(&self.venv)).context("python3 -m venv")?;
                }
                let check =
                    Command::new(&python).args(["-c", "import celery, redis"]).stderr(Stdio::null()).status()?;
                if !check.success() {
                    let requirements = self.dir.join("celery/requirements.txt");
                    run(Command::new(&python).args(["-m", "pip", "install", "-q", "-r"]).arg(requirements))
                        .context("pip install for the Celery peer")?;
                }
            }
        }
        Ok(())
    }

    /// Runs the peer's workloads 1 and 2 on `cpu` against `redis_url`.
    pub async fn run(
        &self,
        peer: Peer,
        redis_url: &str,
        cpu: Option<usize>,
        params: &Params,
        pair: usize,
        log_dir: &Path,
    ) -> anyhow::Result<PeerRun> {
        let mut command = match peer {
            Peer::Bullmq => {
                let mut c = pinned_command("node", cpu);
                c.arg(self.dir.join("bullmq/bench.mjs"));
                c
            }
            Peer::Celery => {
                let mut c = pinned_command(self.venv.join("bin/python"), cpu);
                c.arg(self.dir.join("celery/bench_celery.py"));
                c
            }
        };
        std::fs::create_dir_all(log_dir)?;
        let log =
            std::fs::File::options().create(true).append(true).open(log_dir.join(format!("{}.log", peer.name())))?;
        command
            .env("REDIS_URL", redis_url)
            .env("BENCH_JOBS", params.jobs.to_string())
            .env("BENCH_CHUNK", params.chunk.to_string())
            .env("BENCH_INFLIGHT", params.inflight.to_string())
            .env("BENCH_CONCURRENCY", params.concurrency.to_string())
            .env("BENCH_TIMEOUT_MS", (params.timeout_secs * 1000).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("cannot start the {} peer", peer.name()))?;
        let limit = Duration::from_secs(params.timeout_secs * 2 + 60);
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("the {} peer did not finish within {limit:?}", peer.name()))??;
        if !output.status.success() {
            bail!("the {} peer failed ({}); see {}", peer.name(), output.status, log_dir.display());
        }
        let report: PeerReport = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("the {} peer printed no report", peer.name()))?;
        let measure = |phase: &PhaseReport, workload| -> anyhow::Result<Measurement> {
            let delta = RedisSample::parse(&phase.info_before)?.delta(&RedisSample::parse(&phase.info_after)?);
            Ok(Measurement::new(peer.name(), workload, pair, phase.jobs, phase.secs, &delta, phase.cpu_secs))
        };
        Ok(PeerRun {
            version: report.version,
            runtime: report.runtime,
            enqueue: measure(&report.enqueue, Workload::EnqueueLibrary)?,
            process: measure(&report.process, Workload::Process)?,
        })
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
