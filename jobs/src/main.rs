//! `jobs`: the operator's command line for a jobs deployment. This file only parses,
//! dispatches and turns the outcome into an exit code; each command family lives in its
//! own module (`admin`: everything that talks to a running API over HTTP).

mod admin;

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
    #[command(flatten)]
    Admin(admin::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
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
