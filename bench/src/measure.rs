//! One measured phase of one system, reduced to per-job figures.

use serde::{Deserialize, Serialize};

use crate::redis_stats::RedisDelta;

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Workload 1 through our HTTP API: `POST /v1/jobs/batch`, validation included.
    EnqueueHttp,
    /// Workload 1 through a library call: our `JobStore::enqueue`, BullMQ `addBulk`,
    /// Celery `apply_async` inside a batching producer.
    EnqueueLibrary,
    /// Workload 2: one worker process drains the pre-loaded jobs.
    Process,
}

impl Workload {
    pub fn title(self) -> &'static str {
        match self {
            Workload::EnqueueHttp => "bulk enqueue, HTTP batch",
            Workload::EnqueueLibrary => "bulk enqueue, library",
            Workload::Process => "processing",
        }
    }
}

/// Workload 1 or 2 of one system in one pair of the A/B sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// `ours`, `bullmq` or `celery`.
    pub system: String,
    pub workload: Workload,
    /// Which round of the interleaved sequence (0-based).
    pub pair: usize,
    pub jobs: u64,
    pub secs: f64,
    pub jobs_per_sec: f64,
    /// Redis server CPU (user + system) per job, µs.
    pub redis_cpu_us_per_job: f64,
    /// Redis commands per job, those run inside scripts included.
    pub redis_cmds_per_job: f64,
    /// Script calls (EVALSHA) per job.
    pub redis_scripts_per_job: f64,
    /// CPU of the system's own processes per job, µs: our api or worker; the
    /// peer's node process, or its producer or worker process.
    pub process_cpu_us_per_job: f64,
    /// Most frequent Redis commands, calls per job.
    pub top_commands: Vec<(String, f64)>,
}

impl Measurement {
    pub fn new(
        system: &str,
        workload: Workload,
        pair: usize,
        jobs: u64,
        secs: f64,
        redis: &RedisDelta,
        process_cpu_secs: f64,
    ) -> Self {
        let per_job = |x: f64| x / jobs.max(1) as f64;
        Self {
            system: system.to_owned(),
            workload,
            pair,
            jobs,
            secs,
            jobs_per_sec: jobs as f64 / secs.max(1e-9),
            redis_cpu_us_per_job: per_job(redis.cpu_secs * 1e6),
            redis_cmds_per_job: per_job(redis.total_calls() as f64),
            redis_scripts_per_job: per_job(redis.script_calls() as f64),
            process_cpu_us_per_job: per_job(process_cpu_secs * 1e6),
            top_commands: redis.top_per_job(jobs.max(1), 12),
        }
    }
}

/// Workload 3 at one rate: open-loop single-job submissions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRun {
    pub round: usize,
    /// Requests per second, scheduled.
    pub rate: u32,
    /// Measured seconds (after the warm-up).
    pub secs: f64,
    /// Requests measured (those scheduled after the warm-up).
    pub requests: u64,
    /// Requests that got no 202 (errors and timeouts); not in the percentiles.
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// How late the generator sent requests, p99 (its own health, ms).
    pub send_lag_p99_ms: f64,
    pub redis_cpu_us_per_req: f64,
    pub redis_cmds_per_req: f64,
    pub api_cpu_us_per_req: f64,
}

/// Workload 4 at one rate: `POST /v1/jobs` open loop, one worker, and one
/// WebSocket subscriber; latency from a job's scheduled send to its
/// `succeeded` event arriving on the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct E2eRun {
    pub round: usize,
    /// Jobs per second, scheduled.
    pub rate: u32,
    /// Measured seconds (after the warm-up).
    pub secs: f64,
    /// Jobs measured: scheduled after the warm-up and accepted (202).
    pub jobs: u64,
    /// Measured jobs the API did not accept (errors, timeouts, generator overflow).
    pub post_errors: u64,
    /// Accepted jobs whose `succeeded` event did not arrive within the timeout.
    pub lost: u64,
    /// The subscriber's close code if the server closed it during the run (1013: too slow).
    pub subscriber_closed: Option<u16>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The `POST /v1/jobs` answer alone (scheduled send to 202), p99.
    pub post_p99_ms: f64,
    /// How late the generator sent requests, p99 (its own health, ms).
    pub send_lag_p99_ms: f64,
    /// Per job sent (warm-up included), from the run's start to the last event.
    pub api_cpu_us_per_job: f64,
    pub worker_cpu_us_per_job: f64,
    /// This process: the load generator, its HTTP client and the subscriber.
    #[serde(default)]
    pub harness_cpu_us_per_job: f64,
    /// How busy the CPU of the api, worker and harness was over the run, % (any process on it counts).
    #[serde(default)]
    pub sut_cpu_busy_pct: f64,
    pub redis_cpu_us_per_job: f64,
    pub redis_cmds_per_job: f64,
}

/// Workload 6 with one number of subscribers: every subscriber follows all of
/// one tenant's jobs while jobs go through at a fixed rate (each job makes
/// three events: `queued`, `running`, `succeeded`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRun {
    pub round: usize,
    pub subscribers: u64,
    /// Subscribers that got `subscribed`.
    pub connected: u64,
    /// Seconds from the first connect to the last `subscribed`.
    pub connect_secs: f64,
    /// Jobs per second, scheduled.
    pub job_rate: f64,
    /// Jobs accepted (202).
    pub jobs: u64,
    /// Events every subscriber should receive: 3 per accepted job.
    pub events_per_subscriber: u64,
    /// Deliveries the schedule asked for per second (events/s × subscribers).
    pub offered_per_sec: f64,
    /// Events received by all subscribers together.
    pub delivered: u64,
    /// `delivered` over the time from the first scheduled job to the last arrival.
    pub delivered_per_sec: f64,
    /// Deliveries owed to subscribers that were still open but had not arrived by the timeout.
    pub lost: u64,
    /// Subscribers the server closed with 1013 (fell `WS_BUFFER` messages behind).
    pub closed_slow: u64,
    /// Subscribers closed or failed for any other reason during the run.
    pub closed_other: u64,
    /// Delivery latency: arrival at the subscriber minus the event's `at` stamp
    /// (whole milliseconds, so up to 1 ms high).
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU per delivery, µs: the API (fan-out and socket writes) and this harness (socket reads).
    pub api_cpu_us_per_delivery: f64,
    pub harness_cpu_us_per_delivery: f64,
    /// How busy the CPU of the api, worker and harness was while jobs went through, %.
    #[serde(default)]
    pub sut_cpu_busy_pct: f64,
    pub redis_cpu_us_per_job: f64,
}
