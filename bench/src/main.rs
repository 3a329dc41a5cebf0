//! `bench` binary: pins itself to the system-under-test CPU (before the async
//! runtime starts its threads, which inherit the pinning), then runs the command.

use bench::cli::{Cli, Command};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = match &cli.command {
        Command::Run(o)
        | Command::Throughput(o)
        | Command::Latency(o)
        | Command::E2e(o)
        | Command::Fanout(o)
        | Command::Hostile(o)
        | Command::Profile(o) => Some(o),
        Command::Report { .. } => None,
    };
    if let Some(cpu) = options.and_then(|o| o.pinning().harness_cpu) {
        bench::procs::pin_self(cpu)?;
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench::execute(cli.command))
}
