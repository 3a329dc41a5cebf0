//! Worker configuration: environment variables with matching flags.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lettre::message::Mailbox;
use secrecy::SecretString;
use shared::config::{DemoArgs, LogArgs, RedisArgs, RetentionArgs};

/// Runs jobs from Redis. With no subcommand it works until SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(name = "worker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: WorkerConfig,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Apply pending Redis schema migrations, then exit.
    Migrate,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerConfig {
    /// Set by `dev` (not a flag): the defaults of a local trial (demo types on).
    #[arg(skip)]
    pub dev: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
    /// Queues to serve, comma-separated, in priority order; empty = every queue, taken in turn.
    #[arg(long, env = "QUEUES", value_name = "QUEUES", value_delimiter = ',', default_value = "")]
    pub queues: Vec<String>,
    /// Jobs run at once by this process.
    #[arg(long, env = "CONCURRENCY", value_name = "CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Seconds a running job's lease lasts without a heartbeat; a job whose worker
    /// died is taken back after this long.
    #[arg(long, env = "LEASE_SECS", value_name = "LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_secs: u64,
    /// Seconds running jobs get to finish after SIGTERM before they are handed back.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", value_name = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Most jobs claimed per round trip; a worker claims only as many as it has free
    /// slots (default: the concurrency, at most 200).
    #[arg(long, env = "CLAIM_BATCH", value_name = "CLAIM_BATCH", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub claim_batch: Option<u32>,
    /// Jobs of one tenant running at once across all workers, enforced when jobs
    /// are claimed; 0 = no cap. Every worker must agree.
    #[arg(long, env = "TENANT_MAX_RUNNING", value_name = "TENANT_MAX_RUNNING", default_value_t = 0)]
    pub tenant_max_running: u32,
    /// Caps per queue on one tenant's running jobs there, `queue=n` comma-separated
    /// (e.g. `email=5,reports=1`); they apply besides TENANT_MAX_RUNNING.
    #[arg(long, env = "TENANT_MAX_RUNNING_PER_QUEUE", value_name = "TENANT_MAX_RUNNING_PER_QUEUE", value_delimiter = ',', value_parser = parse_queue_cap)]
    pub tenant_max_running_per_queue: Vec<(String, u32)>,
    /// Where to serve Prometheus metrics (`GET /metrics`); unset = no metrics endpoint.
    #[arg(long, env = "METRICS_ADDR", value_name = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// SMTP server, in lettre's URL form: `smtp://host:port` (plain), `smtps://…` or `?tls=required`.
    #[arg(long, env = "SMTP_URL", value_name = "SMTP_URL", default_value = "smtp://127.0.0.1:2525", value_parser = parse_secret, hide_default_value = false, hide_env_values = true)]
    pub smtp_url: SecretString,
    /// Sender of `email.send` jobs.
    #[arg(long, env = "MAIL_FROM", value_name = "MAIL_FROM", default_value = "jobs@localhost")]
    pub mail_from: Mailbox,
}

fn parse_queue_cap(value: &str) -> Result<(String, u32), String> {
    let (queue, cap) = value.split_once('=').ok_or("use queue=n")?;
    let cap = cap.parse().map_err(|_| format!("`{cap}` is not a number"))?;
    Ok((queue.to_owned(), cap))
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn claim_batch(&self) -> usize {
        self.claim_batch.map_or(self.concurrency.min(200), |b| b) as usize
    }

    /// The queues to serve; empty means all of them.
    pub fn queue_list(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.trim().to_owned()).filter(|q| !q.is_empty()).collect()
    }

    /// Defaults as if no variable were set, for tests and tools.
    pub fn defaults() -> Self {
        Cli::parse_from(["worker"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let err = Cli::try_parse_from(["worker", "--concurrency", "zero"]).unwrap_err().to_string();
        assert!(err.contains("CONCURRENCY"), "{err}");
        let err = Cli::try_parse_from(["worker", "--mail-from", "not an address"]).unwrap_err().to_string();
        assert!(err.contains("MAIL_FROM"), "{err}");
    }

    #[test]
    fn queues_are_a_comma_list() {
        let cli = Cli::try_parse_from(["worker", "--queues", "email, default"]).unwrap();
        assert_eq!(cli.config.queue_list(), vec!["email", "default"]);
        assert!(Cli::try_parse_from(["worker"]).unwrap().config.queue_list().is_empty());
    }
}
