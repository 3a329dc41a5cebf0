//! `jobs`: the command line for a jobs deployment. This file only parses,
//! dispatches and turns the outcome into an exit code; each command family lives in its
//! own module (`admin`: everything that talks to a running API over HTTP; `dev`: the
//! whole system in this process, for local use).

mod admin;
mod dev;
mod mailcatcher;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "jobs", version, about = "Inspect, follow and drive a jobs deployment through its HTTP API.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every top-level command. Families are flattened in, so `jobs get` rather than
/// `jobs admin get`; a new family (such as `dev`) is one more variant and one more arm.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system in this process for local use: the API (on BIND_ADDR)
    /// and one worker, with the demo job types; starts a local redis-server (AOF
    /// under ./data) if none answers, and prints a token for tenant `dev`.
    Dev(DevArgs),
    #[command(flatten)]
    Admin(admin::Command),
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// The worker's settings (the API's come from the environment).
    #[command(flatten)]
    config: worker::config::WorkerConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Dev(args) => {
            shared::telemetry::init(args.config.log.log_format);
            return match dev::run(args.config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Admin(command) => admin::run(command).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
