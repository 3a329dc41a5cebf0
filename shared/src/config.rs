//! Settings both binaries share. Each is an environment variable with a matching
//! CLI flag (clap); a bad value stops start-up with a message naming it.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::store::StoreConfig;

/// Where Redis is and which keys are ours.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis connection URL.
    #[arg(
        long,
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prefix (and hash tag) of every key, so several deployments share one Redis.
    #[arg(long, env = "REDIS_PREFIX", value_name = "REDIS_PREFIX", default_value = "jobs", value_parser = parse_prefix)]
    pub redis_prefix: String,
}

fn parse_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(value.to_owned()) } else { Err("use 1-64 characters from [A-Za-z0-9._-]".into()) }
}

/// How long data is kept.
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// Seconds a succeeded job's record is kept.
    #[arg(long, env = "SUCCEEDED_TTL_SECS", value_name = "SUCCEEDED_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub succeeded_ttl_secs: u64,
    /// Most succeeded records kept per queue and tenant: past it the oldest are
    /// deleted as new ones succeed, whatever their age; 0 = no cap.
    #[arg(long, env = "SUCCEEDED_MAX_PER_QUEUE", value_name = "SUCCEEDED_MAX_PER_QUEUE", default_value_t = 0)]
    pub succeeded_max_per_queue: u64,
    /// Seconds a failed or cancelled job's record is kept.
    #[arg(long, env = "FAILED_TTL_SECS", value_name = "FAILED_TTL_SECS", default_value_t = 604_800, value_parser = clap::value_parser!(u64).range(1..))]
    pub failed_ttl_secs: u64,
    /// Seconds an Idempotency-Key stays claimed.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", value_name = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_ttl_secs: u64,
    /// Approximate number of entries the events stream keeps.
    #[arg(long, env = "EVENTS_MAXLEN", value_name = "EVENTS_MAXLEN", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub events_maxlen: u64,
}

impl RetentionArgs {
    pub fn store_config(&self, prefix: &str) -> StoreConfig {
        StoreConfig {
            prefix: prefix.to_owned(),
            succeeded_ttl: Duration::from_secs(self.succeeded_ttl_secs),
            succeeded_max_per_queue: self.succeeded_max_per_queue,
            failed_ttl: Duration::from_secs(self.failed_ttl_secs),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            events_maxlen: self.events_maxlen,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// `text` for people, `json` for log collectors. Levels come from RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Whether the demo job types (`noop`, `sleep`, `fail`) are enabled: off unless
/// set, but on in `dev` unless set to false.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[arg(long, env = "DEMO_JOBS", value_name = "DEMO_JOBS", action = clap::ArgAction::Set)]
    pub demo_jobs: Option<bool>,
}

impl DemoArgs {
    /// Whether they are on; `dev` turns them on when nothing says otherwise.
    pub fn enabled(&self, dev: bool) -> bool {
        self.demo_jobs.unwrap_or(dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_restricted_to_safe_characters() {
        assert!(parse_prefix("jobs-test_1.a").is_ok());
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("a}b").is_err());
        assert!(parse_prefix("a b").is_err());
    }
}
