//! The admin commands: each talks to a running API over HTTP (and its WebSocket for
//! `tail`), never to Redis, so it sees exactly what any client would and needs only a
//! token.
//!
//! # Layout
//! - [`client`]: the HTTP client (token, base URL, timeouts) and how answers become [`Failure`]s.
//! - [`failure`]: [`Failure`] and its exit codes.
//! - [`records`]: `get`, `list`, `enqueue` (one job), `cancel`, `retry`.
//! - [`bulk`]: `enqueue --ndjson`, in batches, through rate limits.
//! - [`queues`]: `stats` and `retry-failed`.
//! - [`tail`]: `tail`, live events with resume.
//! - [`print`]: tables, key/value lines, progress bars.

mod bulk;
mod client;
mod failure;
mod print;
mod queues;
mod records;
mod tail;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use client::Client;
pub use failure::Failure;

/// Where the API is and who is asking; shared by every admin command.
#[derive(Debug, Args)]
#[command(next_help_heading = "API and output")]
pub struct ApiArgs {
    /// Base URL of the API (plain HTTP).
    #[arg(long = "api", env = "JOBS_API", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub base: String,
    /// Bearer token (JWT) sent with every request; `jobs:read`, and `jobs:write` for changes.
    #[arg(long, env = "JOBS_TOKEN", hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// Print the API's JSON as it came: one document, or one per line (NDJSON) for streams.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a job's record and its status history.
    Get(IdArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Follow live status changes over the events WebSocket.
    Tail(TailArgs),
    /// Submit one job, or many from an NDJSON file (`--ndjson`).
    Enqueue(EnqueueArgs),
    /// Queue a queue's failed jobs again, until none is left.
    RetryFailed(RetryFailedArgs),
    /// Cancel a job (a running one is flagged and stops at its next heartbeat).
    Cancel(IdArgs),
    /// Run a failed or cancelled job again, with a fresh attempt budget.
    Retry(IdArgs),
    /// Counts per queue and status; with an operator's token, latency and workers too.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job id.
    pub id: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status (queued, scheduled, running, retrying, succeeded, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only jobs on this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Jobs per page (1-500; the API's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Start at this `next_cursor` of an earlier page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` to the end (with `--json`: one record per line).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Follow these jobs (comma-separated ids); each first arrives as a snapshot.
    #[arg(long = "job", value_name = "ID,...", value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// Follow this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Resume after this event id (replayed from the API's stream).
    #[arg(long, value_name = "EVENT_ID")]
    pub since: Option<String>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job type (`email.send`, `noop`, ...).
    #[arg(value_name = "TYPE", required_unless_present = "ndjson", conflicts_with = "ndjson")]
    pub job_type: Option<String>,
    /// The payload: JSON, or `@file.json` to read it from a file.
    #[arg(long, value_name = "JSON|@FILE", conflicts_with = "ndjson")]
    pub payload: Option<String>,
    /// Queue to use instead of the type's.
    #[arg(long, conflicts_with = "ndjson")]
    pub queue: Option<String>,
    /// Run no earlier than this many milliseconds from now.
    #[arg(long, value_name = "MS", conflicts_with = "ndjson")]
    pub delay_ms: Option<u64>,
    /// Attempts before the job fails for good (1-100; default the type's).
    #[arg(long, value_name = "N", conflicts_with = "ndjson")]
    pub max_attempts: Option<u32>,
    /// Idempotency-Key; with `--ndjson`, the prefix of each batch's key.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Submit every line of this file (one job request as JSON per line) in batches.
    #[arg(long, value_name = "FILE")]
    pub ndjson: Option<PathBuf>,
    /// With `--ndjson`: most jobs per batch.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub batch_size: u32,
    /// With `--ndjson`: most bytes per batch body (keep it under the API's MAX_BODY_BYTES).
    #[arg(long, value_name = "BYTES", default_value_t = 1_000_000)]
    pub batch_bytes: usize,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct RetryFailedArgs {
    /// The queue whose failed jobs to retry.
    pub queue: String,
    /// Jobs per request (1-1,000); requests repeat until none of those failed at the start is left.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub limit: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs one admin command to its end.
pub async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Get(args) => records::get(&Client::new(&args.api)?, &args).await,
        Command::List(args) => records::list(&Client::new(&args.api)?, &args).await,
        Command::Tail(args) => tail::tail(&Client::new(&args.api)?, &args).await,
        Command::Enqueue(args) if args.ndjson.is_some() => bulk::enqueue(&Client::new(&args.api)?, &args).await,
        Command::Enqueue(args) => records::enqueue(&Client::new(&args.api)?, &args).await,
        Command::RetryFailed(args) => queues::retry_failed(&Client::new(&args.api)?, &args).await,
        Command::Cancel(args) => records::change(&Client::new(&args.api)?, &args, records::Change::Cancel).await,
        Command::Retry(args) => records::change(&Client::new(&args.api)?, &args, records::Change::Retry).await,
        Command::Stats(args) => queues::stats(&Client::new(&args.api)?, &args).await,
    }
}
