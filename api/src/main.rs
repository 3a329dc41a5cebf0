//! `api` binary: parses the configuration, builds the router, serves.

use anyhow::Context as _;
use api::config::{Cli, Command};
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init(cli.config.log.log_format);
    match &cli.command {
        Some(Command::Migrate) => return api::migrate(&cli.config).await,
        Some(Command::Token(args)) => {
            let request = api::auth::TokenRequest {
                tenant: &args.tenant,
                subject: &args.subject,
                scope: &args.scope,
                ttl: args.ttl,
                private_key_file: args.private_key_file.as_ref(),
            };
            println!("{}", api::auth::mint(&cli.config.auth, &request)?);
            return Ok(());
        }
        None => {}
    }
    let router = api::build(&cli.config).await?;
    let listener = tokio::net::TcpListener::bind(cli.config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR={}", cli.config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening on http://{}", listener.local_addr()?);
    api::serve(listener, router, shared::shutdown::signal()).await?;
    Ok(())
}
