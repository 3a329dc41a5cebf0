//! `api`: the HTTP front door. Validates job submissions, enqueues them
//! idempotently into Redis, answers status queries.
//!
//! [`build`] connects to Redis and brings its schema up to date; [`serve`] runs
//! the router on a listener until the shutdown future resolves. Tests call the
//! same two functions the binary does.

pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod openapi;
pub mod refusals;
pub mod routes;
pub mod storage;
pub mod submit;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use redis::aio::ConnectionManager;
use shared::jobs::Registry;
use shared::keys::Keys;
use shared::store::{JobStore, RateLimit, TenantLimits, connect_with_retry};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::auth::Authenticator;
use crate::config::ApiConfig;
use crate::error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    store: Arc<OnceLock<JobStore>>,
    /// Why the store is not there yet, for /readyz.
    problem: Arc<Mutex<String>>,
    /// What every submission is checked against.
    pub rules: Arc<submit::Rules>,
    /// Redis's memory, for admission control.
    pub storage: storage::Storage,
    pub max_body_bytes: u64,
    pub auth: Arc<Authenticator>,
    /// What each tenant may submit: its rate and its queues.
    pub limits: TenantLimits,
    /// Tenants the rate limit just refused (see `refusals.rs`).
    pub refusals: Arc<refusals::Refusals>,
    /// Live events: the connection manager, started once the store is set up.
    pub events: events::Hub,
    pub events_settings: Arc<events::EventsSettings>,
}

impl AppState {
    /// The job store, or 503 while Redis has not been reached since start-up.
    pub fn store(&self) -> Result<&JobStore, ApiError> {
        self.store.get().ok_or(ApiError::Unavailable)
    }

    fn startup_problem(&self) -> String {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_problem(&self, problem: String) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}

/// How long a Redis command may take before the request fails with 503.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The `api` command line (`args` as `std::env::args_os()` gives them): parses
/// the configuration, then serves until SIGTERM/SIGINT, or runs a subcommand.
/// `register` adds a deployment's own job types to the shipped ones, so its own
/// binary is `api::main_with(std::env::args_os(), |r| r.register::<MyJob>())`.
pub async fn main_with<I, T>(args: I, register: impl FnOnce(Registry) -> Registry) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use anyhow::Context as _;
    use clap::Parser as _;

    let cli = config::Cli::parse_from(args);
    shared::telemetry::init(cli.config.log.log_format);
    match &cli.command {
        Some(config::Command::Migrate) => return migrate(&cli.config).await,
        Some(config::Command::Token(args)) => {
            let request = auth::TokenRequest {
                tenant: &args.tenant,
                subject: &args.subject,
                scope: &args.scope,
                ttl: args.ttl,
                private_key_file: args.private_key_file.as_ref(),
            };
            println!("{}", auth::mint(&cli.config.auth, &request)?);
            return Ok(());
        }
        None => {}
    }
    let registry = register(Registry::standard(cli.config.demo.enabled(cli.config.dev)));
    let router = build_with(&cli.config, registry).await?;
    let listener = tokio::net::TcpListener::bind(cli.config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR={}", cli.config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening on http://{}", listener.local_addr()?);
    serve(listener, router, shared::shutdown::signal()).await?;
    Ok(())
}

/// Connects to Redis, applies pending migrations, and returns the router.
///
/// When Redis answers, a schema problem fails here, at start-up. When it does
/// not, the router is returned anyway: it answers 503 (and /readyz says why)
/// while a background task keeps connecting and then sets up the store.
pub async fn build(config: &ApiConfig) -> anyhow::Result<Router> {
    build_with(config, Registry::standard(config.demo.enabled(config.dev))).await
}

/// [`build`], for the job types of `registry` (the same the workers run): each
/// submission is checked against its type's payload.
pub async fn build_with(config: &ApiConfig, registry: Registry) -> anyhow::Result<Router> {
    routes::metrics::recorder();
    let state = AppState {
        store: Arc::default(),
        problem: Arc::new(Mutex::new("connecting to redis".into())),
        rules: Arc::new(submit::Rules {
            registry,
            queues_allowed: config.isolation.queues_allowed.clone(),
            max_payload_bytes: config.isolation.max_payload_bytes as usize,
            email_allowed_domains: config.isolation.email_allowed_domains.clone(),
        }),
        max_body_bytes: config.max_body_bytes,
        auth: Arc::new(Authenticator::from_config(&config.auth)?),
        limits: TenantLimits {
            rate: (config.rate_limit.rate_limit_per_sec > 0).then_some(RateLimit {
                per_sec: config.rate_limit.rate_limit_per_sec,
                burst: config.rate_limit.rate_limit_burst,
            }),
            max_queues: config.isolation.tenant_max_queues,
            max_live_jobs: config.isolation.tenant_max_live_jobs,
            max_bytes: config.isolation.tenant_max_bytes,
            email_recipients_per_day: config.isolation.email_daily_recipients,
        },
        refusals: Arc::default(),
        storage: storage::Storage::new(config.isolation.storage_high_water_percent),
        events: events::Hub::new(config.events.ws_buffer as usize),
        events_settings: Arc::new(events::EventsSettings::from_config(&config.events)),
    };
    match shared::store::connect(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await {
        Ok(conn) => {
            let store = prepare(conn, config).await?;
            state.events.start(&store, &config.redis.redis_url).await;
            state.storage.watch(store.connection());
            let _ = state.store.set(store);
        }
        Err(err) if err.is_unavailable() => {
            tracing::warn!(error = %err, "redis not reachable at start-up; serving 503 until it is");
            state.set_problem(format!("redis not reachable yet: {err}"));
            tokio::spawn(connect_later(state.clone(), config.clone()));
        }
        Err(err) => return Err(err.into()),
    }
    Ok(routes::router(state))
}

async fn prepare(mut conn: ConnectionManager, config: &ApiConfig) -> anyhow::Result<JobStore> {
    let keys = Keys::new(&config.redis.redis_prefix);
    shared::migrate::run(&mut conn, &keys).await.context("cannot bring the Redis schema up to date")?;
    shared::scripts::preload(&mut conn).await.context("cannot load the Lua scripts")?;
    for warning in shared::store::durability_warnings(&mut conn).await {
        tracing::warn!("{warning}");
    }
    let durability = config.durability.durability();
    for warning in shared::store::check_durability(&mut conn, durability).await? {
        tracing::warn!("{warning}");
    }
    let store = JobStore::new(conn, config.retention.store_config(&config.redis.redis_prefix));
    Ok(store.with_durability(&config.redis.redis_url, durability, REDIS_TIMEOUT).await?)
}

async fn connect_later(state: AppState, config: ApiConfig) {
    let prepared = async {
        let conn = connect_with_retry(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await?;
        prepare(conn, &config).await
    };
    match prepared.await {
        Ok(store) => {
            state.events.start(&store, &config.redis.redis_url).await;
            state.storage.watch(store.connection());
            let _ = state.store.set(store);
            tracing::info!("redis reached; serving");
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "cannot set up the job store");
            state.set_problem(format!("{err:#}"));
        }
    }
}

/// Applies pending migrations and exits.
pub async fn migrate(config: &ApiConfig) -> anyhow::Result<()> {
    let mut conn = connect_with_retry(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await?;
    let keys = Keys::new(&config.redis.redis_prefix);
    let applied = shared::migrate::run(&mut conn, &keys).await?;
    tracing::info!(?applied, version = shared::migrate::latest(), "schema up to date");
    Ok(())
}

/// A client must send its request headers within this time (slow-header attacks).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write to any connection (a response, an event stream, a socket)
/// may make no progress before the connection is dropped. Event connections
/// have a shorter deadline of their own (`WS_WRITE_TIMEOUT_SECS`), closing them
/// with 1013; this catches the rest.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel's send buffer per connection (Linux doubles it for its own use):
/// enough to keep a fast link busy, small enough that a client that stops
/// reading costs little before its write timeout or queue closes it.
pub const SEND_BUFFER_BYTES: usize = 256 * 1024;

/// How long in-flight requests get to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and finishes in-flight
/// requests (for at most [`SHUTDOWN_GRACE`]). Event sockets and streams are told
/// to close (1001) and are waited for within the same grace.
///
/// A hyper accept loop rather than `axum::serve`, which sets no header-read
/// timeout: a client trickling its headers would hold a connection for ever.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let (stop, stopping) = watch::channel(false);
    // Each connection holds a sender; when all are dropped, every connection has ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    // Upgraded sockets outlive their HTTP connection: they hear of shutdown, and
    // hold `open`, through this extension.
    let router = router.layer(axum::Extension(events::Draining { stopping: stopping.clone(), _open: open.clone() }));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        // What the kernel buffers for a peer that stops reading is bounded (Linux
        // autotunes it up to megabytes, all of it work done for nobody).
        if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER_BYTES) {
            tracing::debug!(error = %err, "cannot size a connection's send buffer");
        }
        // A peer that stops reading cannot hold a connection (and what is
        // buffered for it) for ever: a write that makes no progress fails.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let connection = http.serve_connection(TokioIo::new(Box::pin(stream)), service).with_upgrades();
        let (mut stopping, open) = (stopping.clone(), open.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(router);
    stop.send_replace(true);
    drop(open);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv()).await.is_err() {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
    Ok(())
}
