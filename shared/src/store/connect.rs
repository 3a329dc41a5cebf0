//! Connections to Redis that reconnect by themselves.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Durability;
use crate::error::{StoreError, StoreResult};

/// Opens a reconnecting, multiplexed connection. Commands fail fast (and the
/// manager reconnects in the background) while Redis is away.
pub async fn connect(url: &str, response_timeout: Option<Duration>) -> StoreResult<ConnectionManager> {
    let client = redis::Client::open(url).map_err(StoreError::Redis)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// Waits until Redis answers, logging while it does not. Used at start-up so a
/// process started before its Redis carries on by itself.
pub async fn connect_with_retry(url: &str, response_timeout: Option<Duration>) -> StoreResult<ConnectionManager> {
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(url, response_timeout).await {
            Ok(conn) => return Ok(conn),
            Err(StoreError::Unavailable(err)) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "redis not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Redis settings that would lose accepted jobs, as warnings to log at start-up:
/// an eviction policy other than `noeviction` (Redis would drop jobs when full)
/// and persistence off (a restart would drop everything). Settings Redis will
/// not show (`CONFIG` disabled, as on some managed services) are skipped.
pub async fn durability_warnings(conn: &mut ConnectionManager) -> Vec<String> {
    let mut warnings = Vec::new();
    let setting = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await.ok()?;
            pair.get(1).cloned()
        }
    };
    if let Some(policy) = setting("maxmemory-policy").await
        && policy != "noeviction"
    {
        warnings.push(format!(
            "redis maxmemory-policy is `{policy}`: when memory runs out Redis will evict keys, jobs included; set it to `noeviction`"
        ));
    }
    let aof = setting("appendonly").await;
    let rdb = setting("save").await;
    if aof.as_deref() == Some("no") && rdb.as_deref() == Some("") {
        warnings.push("redis persistence is off (appendonly no, no save points): a Redis restart loses every job; turn on appendonly".into());
    }
    warnings
}

/// Checks that this Redis can give the durability asked for. Errs when it
/// cannot (`WAITAOF` needs Redis 7.2); warns when fewer replicas are connected
/// now than every enqueue will wait for.
pub async fn check_durability(conn: &mut ConnectionManager, durability: Durability) -> StoreResult<Vec<String>> {
    let mut warnings = Vec::new();
    if !durability.waits() {
        return Ok(warnings);
    }
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = field(&info, "redis_version").unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if durability.local_aof && (major, minor) < (7, 2) {
        return Err(StoreError::Unsupported(format!(
            "ENQUEUE_WAIT_AOF needs WAITAOF, which Redis has from 7.2 on; this one is {version}"
        )));
    }
    let replication: String = redis::cmd("INFO").arg("replication").query_async(conn).await?;
    let connected: u32 = field(&replication, "connected_slaves").and_then(|n| n.parse().ok()).unwrap_or(0);
    if connected < durability.replicas {
        warnings.push(format!(
            "enqueues wait for {} replicas and {connected} are connected: until more are, every enqueue fails after its wait",
            durability.replicas
        ));
    }
    Ok(warnings)
}

/// The value of `name:` in an `INFO` reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}
