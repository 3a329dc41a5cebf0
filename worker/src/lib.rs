//! `worker`: runs jobs from Redis through an apalis `Worker` under a `Monitor`.
//!
//! The worker's tower stack, outermost first: our backend's ack layer (records
//! each attempt's outcome), concurrency limit, a timeout ceiling, tracing, and
//! panic catching; each job's own timeout is applied by the handler.
//!
//! Shutdown (SIGTERM/SIGINT): stop claiming at once, let running jobs finish
//! within `SHUTDOWN_GRACE_SECS`, hand back whatever is still held, exit 0.

pub mod config;
mod handler;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use secrecy::ExposeSecret;
use shared::backend::{BackendHandle, BackendSettings, RedisBackend, RunningCaps};
use shared::jobs::{EmailSend, JobType, Mailer, MailerConfig, Registry, Services};
use shared::keys::Keys;
use shared::store::{WorkerInfo, connect_with_retry};
use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::handler::{App, run_job};

/// Longest any job may run, whatever its own timeout says.
pub const TIMEOUT_CEILING: Duration = Duration::from_secs(24 * 3600);

/// Applies pending migrations and exits.
pub async fn migrate(config: &WorkerConfig) -> anyhow::Result<()> {
    let mut conn = connect_with_retry(&config.redis.redis_url, Some(Duration::from_secs(5))).await?;
    let keys = Keys::new(&config.redis.redis_prefix);
    let applied = shared::migrate::run(&mut conn, &keys).await?;
    tracing::info!(?applied, version = shared::migrate::latest(), "schema up to date");
    Ok(())
}

/// A unique id per process start: host, pid and a random suffix, so a restart
/// never collides with its previous life.
pub fn worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[random.len() - 8..])
}

/// The `worker` command line (`args` as `std::env::args_os()` gives them):
/// parses the configuration, then works until SIGTERM/SIGINT, or runs a
/// subcommand. `register` adds a deployment's own job types to the shipped
/// ones, and `services` holds what their handlers read ([`run_with`]). A first
/// signal drains; a second exits at once (code 130; leases then expire and other
/// workers take the jobs back).
pub async fn main_with<I, T>(
    args: I,
    register: impl FnOnce(Registry) -> Registry,
    services: Services,
) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser as _;

    let cli = config::Cli::parse_from(args);
    shared::telemetry::init(cli.config.log.log_format);
    match cli.command {
        Some(config::Command::Migrate) => migrate(&cli.config).await,
        None => {
            let (first, drain) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                shared::shutdown::signal().await;
                let _ = first.send(());
                shared::shutdown::signal().await;
                tracing::warn!("second shutdown signal: exiting without draining");
                std::process::exit(130);
            });
            let registry = register(Registry::standard(cli.config.demo.enabled(cli.config.dev)));
            run_with(cli.config, registry, services, async move {
                let _ = drain.await;
            })
            .await
        }
    }
}

/// Works on the shipped job types until `shutdown` resolves, then drains and returns.
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let registry = Registry::standard(config.demo.enabled(config.dev));
    run_with(config, registry, Services::new(), shutdown).await
}

/// Works on the job types of `registry`, whose handlers read `services`, until
/// `shutdown` resolves, then drains and returns. The shipped `email.send` gets
/// its mailer from `SMTP_URL` unless `services` has one. A type that needs a
/// service `services` lacks stops the worker here, before it claims anything.
pub async fn run_with(
    config: WorkerConfig,
    registry: Registry,
    mut services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if registry.names().contains(&EmailSend::NAME) && services.get::<Mailer>().is_none() {
        services.insert(mailer(&config)?);
    }
    registry.check(&services)?;
    if config.metrics_addr.is_some() {
        shared::telemetry::install_metrics(config.metrics_addr);
    }
    let url = &config.redis.redis_url;
    let keys = Keys::new(&config.redis.redis_prefix);
    let mut conn = connect_with_retry(url, Some(Duration::from_secs(5))).await?;
    shared::migrate::run(&mut conn, &keys).await.context("cannot bring the Redis schema up to date")?;
    shared::scripts::preload(&mut conn).await.context("cannot load the Lua scripts")?;
    for warning in shared::store::durability_warnings(&mut conn).await {
        tracing::warn!("{warning}");
    }
    // The idle wait blocks for up to a second; give it room before timing out.
    let blocking = connect_with_retry(url, Some(Duration::from_secs(5))).await?;

    let settings = backend_settings(&config);
    let app = Arc::new(App { registry, services: Arc::new(services), lost_lease_grace: config.lease() });
    let worker = &settings.worker;
    tracing::info!(worker.id = %worker.id, queues = ?worker.queues, concurrency = config.concurrency, "worker starting");

    let handles: Arc<Mutex<Vec<BackendHandle>>> = Arc::default();
    let concurrency = config.concurrency as usize;
    let factory_handles = handles.clone();
    let monitor = Monitor::new().register(move |restarts| {
        let (backend, handle) = RedisBackend::new(conn.clone(), blocking.clone(), settings.clone());
        factory_handles.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
        WorkerBuilder::new(format!("{}#{restarts}", settings.worker.id))
            .backend(backend)
            .data(app.clone())
            .concurrency(concurrency)
            .timeout(TIMEOUT_CEILING)
            .enable_tracing()
            .catch_panic()
            .build(run_job)
    });

    let (stopping_tx, mut stopping) = watch::channel(false);
    let signal_handles = handles.clone();
    let signal = async move {
        shutdown.await;
        for handle in signal_handles.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            handle.stop();
        }
        stopping_tx.send_replace(true);
        Ok(())
    };
    let grace = config.shutdown_grace();
    let deadline = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = monitor.run_with_signal(signal) => {
            if let Err(err) = result {
                tracing::error!(error = %err, "worker stopped with an error");
            }
        }
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace ran out; handing back unfinished jobs"),
    }
    let handles: Vec<BackendHandle> = handles.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for handle in handles {
        let released = handle.finish(Duration::from_secs(10)).await;
        if released > 0 {
            tracing::info!(released, "handed unfinished jobs back to their queues");
        }
    }
    tracing::info!("worker stopped");
    Ok(())
}

fn backend_settings(config: &WorkerConfig) -> BackendSettings {
    BackendSettings {
        worker: WorkerInfo {
            id: worker_id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            queues: config.queue_list(),
            concurrency: config.concurrency as usize,
            started_at: chrono::Utc::now(),
            last_heartbeat: None,
        },
        lease: config.lease(),
        concurrency: config.concurrency as usize,
        claim_batch: config.claim_batch(),
        ack_batch: 500,
        caps: RunningCaps::new(config.tenant_max_running, &config.tenant_max_running_per_queue),
        // Flush as soon as an outcome arrives; outcomes that arrive during a flush
        // go out together in the next one, so batches grow with the load.
        ack_delay: Duration::ZERO,
        store: config.retention.store_config(&config.redis.redis_prefix),
    }
}

fn mailer(config: &WorkerConfig) -> anyhow::Result<Mailer> {
    Mailer::new(&MailerConfig {
        smtp_url: config.smtp_url.expose_secret().to_owned(),
        from: config.mail_from.clone(),
        timeout: Duration::from_secs(30),
    })
    .context("SMTP_URL is not a valid SMTP URL")
}
