//! `api`: the HTTP front door. Validates job submissions, enqueues them
//! idempotently into Redis, answers status queries.
//!
//! [`build`] connects to Redis and brings its schema up to date; [`serve`] runs
//! the router on a listener until the shutdown future resolves. Tests call the
//! same two functions the binary does.

pub mod config;
pub mod error;
pub mod routes;
pub mod submit;
pub mod tenant;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use redis::aio::ConnectionManager;
use shared::jobs::Registry;
use shared::keys::Keys;
use shared::store::{JobStore, connect_with_retry};
use tokio::net::TcpListener;

use crate::config::ApiConfig;
use crate::error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    store: Arc<OnceLock<JobStore>>,
    /// Why the store is not there yet, for /readyz.
    problem: Arc<Mutex<String>>,
    pub registry: Registry,
    pub max_body_bytes: u64,
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

/// Connects to Redis, applies pending migrations, and returns the router.
///
/// When Redis answers, a schema problem fails here, at start-up. When it does
/// not, the router is returned anyway: it answers 503 (and /readyz says why)
/// while a background task keeps connecting and then sets up the store.
pub async fn build(config: &ApiConfig) -> anyhow::Result<Router> {
    let state = AppState {
        store: Arc::default(),
        problem: Arc::new(Mutex::new("connecting to redis".into())),
        registry: Registry::standard(config.demo.demo_jobs),
        max_body_bytes: config.max_body_bytes,
    };
    match shared::store::connect(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await {
        Ok(conn) => {
            let store = prepare(conn, config).await?;
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
    Ok(JobStore::new(conn, config.retention.store_config(&config.redis.redis_prefix)))
}

async fn connect_later(state: AppState, config: ApiConfig) {
    let prepared = async {
        let conn = connect_with_retry(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await?;
        prepare(conn, &config).await
    };
    match prepared.await {
        Ok(store) => {
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

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
