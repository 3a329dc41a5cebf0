//! `partner-sync`: this deployment's one binary. `partner-sync api [OPTIONS]`
//! serves the HTTP API and `partner-sync worker [OPTIONS]` runs jobs, with the
//! product's options and subcommands (`--help`, `migrate`, `api token`), and
//! both know `partner.reserve`.

use shared::jobs::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let role = if args.len() > 1 { args.remove(1).into_string().unwrap_or_default() } else { String::new() };
    match role.as_str() {
        "api" => api::main_with(args, partner_sync::register).await,
        "worker" => {
            let services = Services::new().with(partner_sync::PartnerApi::from_env()?);
            worker::main_with(args, partner_sync::register, services).await
        }
        _ => anyhow::bail!("usage: partner-sync api|worker [OPTIONS] (see partner-sync api --help)"),
    }
}
