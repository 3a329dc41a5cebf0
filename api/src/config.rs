//! API configuration: environment variables with matching flags.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use shared::config::{DemoArgs, LogArgs, RedisArgs, RetentionArgs};

/// The HTTP front door. With no subcommand it serves until SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(name = "api", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: ApiConfig,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Apply pending Redis schema migrations, then exit.
    Migrate,
}

#[derive(Args, Debug, Clone)]
pub struct ApiConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", value_name = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", value_name = "MAX_BODY_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub max_body_bytes: u64,
}

impl ApiConfig {
    /// Defaults as if no variable were set, for tests and tools.
    pub fn defaults() -> Self {
        Cli::parse_from(["api"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let err = Cli::try_parse_from(["api", "--bind-addr", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("BIND_ADDR"), "{err}");
        let err = Cli::try_parse_from(["api", "--redis-prefix", "a b"]).unwrap_err().to_string();
        assert!(err.contains("REDIS_PREFIX"), "{err}");
    }
}
