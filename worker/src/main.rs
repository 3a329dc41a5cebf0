//! `worker` binary: parses the configuration and hands over to [`worker::run`].

use clap::Parser;
use worker::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init(cli.config.log.log_format);
    match cli.command {
        Some(Command::Migrate) => worker::migrate(&cli.config).await,
        Some(Command::Dev) => worker::dev::run(cli.config).await,
        None => worker::run(cli.config, shared::shutdown::signal()).await,
    }
}
