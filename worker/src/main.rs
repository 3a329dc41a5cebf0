//! `worker` binary: parses the configuration and hands over to [`worker::run`].
//! A first SIGTERM/SIGINT drains; a second one exits at once (leases then
//! expire and other workers take the jobs back).

use clap::Parser;
use worker::config::{Cli, Command};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init(cli.config.log.log_format);
    match cli.command {
        Some(Command::Migrate) => worker::migrate(&cli.config).await,
        Some(Command::Dev) => worker::dev::run(cli.config).await,
        None => {
            let (first, drain) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                shared::shutdown::signal().await;
                let _ = first.send(());
                shared::shutdown::signal().await;
                tracing::warn!("second shutdown signal: exiting without draining");
                std::process::exit(130);
            });
            worker::run(cli.config, async move {
                let _ = drain.await;
            })
            .await
        }
    }
}
