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
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use shared::jobs::Registry;
use shared::keys::Keys;
use shared::store::{JobStore, connect_with_retry};
use tokio::net::TcpListener;

use crate::config::ApiConfig;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: JobStore,
    pub registry: Registry,
    pub max_body_bytes: u64,
}

/// How long a Redis command may take before the request fails with 503.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to Redis (waiting for it if need be), applies pending migrations,
/// and returns the router.
pub async fn build(config: &ApiConfig) -> anyhow::Result<Router> {
    let mut conn = connect_with_retry(&config.redis.redis_url, Some(REDIS_TIMEOUT)).await?;
    let keys = Keys::new(&config.redis.redis_prefix);
    shared::migrate::run(&mut conn, &keys).await.context("cannot bring the Redis schema up to date")?;
    shared::scripts::preload(&mut conn).await.context("cannot load the Lua scripts")?;
    let state = AppState {
        store: JobStore::new(conn, config.retention.store_config(&config.redis.redis_prefix)),
        registry: Registry::standard(config.demo.demo_jobs),
        max_body_bytes: config.max_body_bytes,
    };
    Ok(routes::router(state))
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
