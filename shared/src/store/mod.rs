//! `JobStore`: the API's side of the Redis data model — enqueue, read, list,
//! cancel, retry, queue statistics. Every write is one script call.
//!
//! - `connect.rs` — reconnecting connections;
//! - `types.rs` — what goes in and comes out;
//! - `enqueue.rs` — building the ENQUEUE call;
//! - `listing.rs` — paging through a tenant's index;
//! - `stream.rs` — the events stream for live subscribers (snapshots, history).

mod connect;
mod durable;
mod enqueue;
mod listing;
mod stream;
mod types;

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

pub use connect::{check_durability, connect, connect_with_retry, durability_warnings};
pub use listing::valid_cursor;
pub use stream::{Snapshot, body as event_body, last_event_of};
pub use types::*;

use crate::error::{StoreError, StoreResult};
use crate::keys::Keys;
use crate::model::{History, JobRecord, JobStatus, State, from_millis};
use crate::scripts;

/// Retention and trimming settings every writer applies.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub prefix: String,
    /// How long a succeeded record is kept.
    pub succeeded_ttl: Duration,
    /// Most succeeded records kept per queue and tenant (0 = no cap).
    pub succeeded_max_per_queue: u64,
    /// How long a failed or cancelled record is kept.
    pub failed_ttl: Duration,
    /// How long an Idempotency-Key stays claimed.
    pub idempotency_ttl: Duration,
    /// Approximate cap on the events stream, in entries.
    pub events_maxlen: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            prefix: "jobs".into(),
            succeeded_ttl: Duration::from_secs(24 * 3600),
            succeeded_max_per_queue: 0,
            failed_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            events_maxlen: 100_000,
        }
    }
}

/// The API's handle on the job data. Cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    conn: ConnectionManager,
    keys: Keys,
    config: StoreConfig,
    /// Set when enqueues wait for replicas or the disk before they answer.
    durable: Option<std::sync::Arc<durable::Durable>>,
}

impl JobStore {
    pub fn new(conn: ConnectionManager, config: StoreConfig) -> Self {
        Self { keys: Keys::new(&config.prefix), conn, config, durable: None }
    }

    /// Makes every enqueue wait as `durability` says before it answers, over
    /// connections of its own to `url` (see `durable.rs`).
    pub async fn with_durability(
        mut self,
        url: &str,
        durability: Durability,
        response_timeout: Duration,
    ) -> StoreResult<Self> {
        if durability.waits() {
            self.durable = Some(durable::Durable::start(url, &self.keys, durability, response_timeout).await?);
        }
        Ok(self)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A job of `tenant` with its history and payload; `None` if unknown, expired or another tenant's.
    pub async fn get(&self, tenant: &str, id: &str) -> StoreResult<Option<(JobRecord, History)>> {
        Ok(self
            .records(std::slice::from_ref(&id.to_owned()), Payloads::Include)
            .await?
            .pop()
            .flatten()
            .filter(|(r, _)| r.tenant == tenant))
    }

    /// Reads records with their histories in one round trip; `None` for those gone.
    pub(crate) async fn records(
        &self,
        ids: &[String],
        payloads: Payloads,
    ) -> StoreResult<Vec<Option<(JobRecord, History)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.read(ids, payloads, false).await?;
        Ok(ids.iter().zip(reply.chunks(3)).map(|(id, columns)| record_of(id, columns)).collect())
    }

    /// The READ script: three columns per id, then (with `position`) the
    /// stream's last entry id and body.
    async fn read(&self, ids: &[String], payloads: Payloads, position: bool) -> StoreResult<Vec<Option<String>>> {
        let mode = match payloads {
            Payloads::Include => "full",
            Payloads::Omit => "lean",
        };
        let stream = if position { self.keys.events() } else { String::new() };
        Ok(scripts::READ
            .key(self.keys.spec())
            .arg(self.keys.tag())
            .arg(mode)
            .arg(stream)
            .arg(ids)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Cancels a waiting job or flags a running one.
    pub async fn cancel(&self, tenant: &str, id: &str, rate: Option<RateLimit>) -> StoreResult<CancelOutcome> {
        let (per_sec, burst) = rate.map_or((0, 0), |r| (r.per_sec, r.burst));
        let reply: Vec<String> = scripts::CANCEL
            .key(self.keys.state())
            .arg(self.keys.tag())
            .arg(id)
            .arg(tenant)
            .arg(self.config.events_maxlen)
            .arg(self.config.failed_ttl.as_millis() as u64)
            .arg(per_sec)
            .arg(burst)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("limited") => CancelOutcome::RateLimited { retry_after_ms: wait_at(&reply) },
            Some("cancelled") => CancelOutcome::Cancelled,
            Some("flagged") => CancelOutcome::Flagged,
            Some("conflict") => CancelOutcome::Conflict(status_at(&reply)?),
            _ => CancelOutcome::NotFound,
        })
    }

    /// Queues a failed or cancelled job again with a fresh attempt budget.
    pub async fn retry(&self, tenant: &str, id: &str, rate: Option<RateLimit>) -> StoreResult<RetryOutcome> {
        let (per_sec, burst) = rate.map_or((0, 0), |r| (r.per_sec, r.burst));
        let reply: Vec<String> = scripts::RETRY
            .key(self.keys.state())
            .arg(self.keys.tag())
            .arg(id)
            .arg(tenant)
            .arg(self.config.events_maxlen)
            .arg(per_sec)
            .arg(burst)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("limited") => RetryOutcome::RateLimited { retry_after_ms: wait_at(&reply) },
            Some("queued") => RetryOutcome::Queued,
            Some("conflict") => RetryOutcome::Conflict(status_at(&reply)?),
            _ => RetryOutcome::NotFound,
        })
    }

    /// Queues again up to `limit` failed jobs of `tenant` on `queue`, oldest first,
    /// as many as its rate bucket allows.
    pub async fn retry_failed(
        &self,
        tenant: &str,
        queue: &str,
        limit: usize,
        rate: Option<RateLimit>,
    ) -> StoreResult<RetryFailedOutcome> {
        let (per_sec, burst) = rate.map_or((0, 0), |r| (r.per_sec, r.burst));
        let reply: Vec<redis::Value> = scripts::RETRY_FAILED
            .key(self.keys.failed(queue, tenant))
            .arg(self.keys.tag())
            .arg(queue)
            .arg(tenant)
            .arg(limit)
            .arg(self.config.events_maxlen)
            .arg(per_sec)
            .arg(burst)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let number = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok());
        if string_at(&reply, 0).is_ok_and(|tag| tag == "limited") {
            return Ok(RetryFailedOutcome::RateLimited { retry_after_ms: number(1).unwrap_or(1000).max(1) });
        }
        Ok(RetryFailedOutcome::Retried {
            retried: number(0).unwrap_or_default() as usize,
            more: number(1).unwrap_or_default() == 1,
        })
    }

    /// Per-queue counts of one tenant's jobs, over the queues it has jobs in; or of
    /// every tenant's (`None`, for operators), over every queue named. Read from the
    /// counts the scripts keep.
    pub async fn queue_stats(&self, tenant: Option<&str>) -> StoreResult<Vec<QueueStats>> {
        let mut conn = self.conn.clone();
        let tenants: Vec<String> = match tenant {
            Some(tenant) => vec![tenant.to_owned()],
            None => conn.smembers(self.keys.tenants()).await?,
        };
        let mut pipe = redis::pipe();
        match tenant {
            Some(tenant) => pipe.smembers(self.keys.tenant_queues(tenant)),
            None => pipe.smembers(self.keys.queues()),
        };
        for tenant in &tenants {
            pipe.hgetall(self.keys.tenant_counts(tenant));
        }
        // The queue names, then one `queue \t status → n` hash per tenant.
        let mut replies = pipe.query_async::<Vec<redis::Value>>(&mut conn).await?.into_iter();
        let names: Vec<String> =
            redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil)).map_err(redis::RedisError::from)?;
        let mut stats: BTreeMap<String, QueueStats> =
            names.into_iter().map(|name| (name.clone(), QueueStats::empty(name))).collect();
        for reply in replies {
            let counts: Vec<(String, i64)> = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
            for (field, n) in counts {
                let Some((queue, status)) = field.split_once('\t') else { continue };
                let Ok(status) = status.parse::<JobStatus>() else { continue };
                // A queue the tenant has left is not listed.
                if let Some(entry) = stats.get_mut(queue) {
                    *entry.count_mut(status) += n.max(0) as u64;
                }
            }
        }
        Ok(stats.into_values().collect())
    }

    /// How long the oldest ready job of each queue with ready jobs has been due,
    /// in ms, over every tenant's jobs: the head of each tenant's list, oldest of all.
    pub async fn queue_latency(&self) -> StoreResult<BTreeMap<String, u64>> {
        let mut conn = self.conn.clone();
        let names: Vec<String> = conn.lrange(self.keys.ready_queues(), 0, -1).await?;
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.lrange(self.keys.ring(name), 0, -1);
        }
        let rings: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        let mut heads: Vec<&str> = Vec::new();
        for (name, ring) in names.iter().zip(&rings) {
            for tenant in ring {
                pipe.lindex(self.keys.ready(name, tenant), 0);
                heads.push(name);
            }
        }
        let ids: Vec<Option<String>> = if heads.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
        let waiting: Vec<(&str, String)> =
            heads.into_iter().zip(ids).filter_map(|(name, id)| Some((name, id?))).collect();
        let mut latency: BTreeMap<String, u64> = names.iter().map(|name| (name.clone(), 0)).collect();
        if waiting.is_empty() {
            return Ok(latency);
        }
        let ids: Vec<&str> = waiting.iter().map(|(_, id)| id.as_str()).collect();
        let states: Vec<Option<String>> =
            redis::cmd("HMGET").arg(self.keys.state()).arg(ids).query_async(&mut conn).await?;
        let now = chrono::Utc::now().timestamp_millis();
        for ((name, _), state) in waiting.into_iter().zip(states) {
            if let Some(due) = state.as_deref().and_then(|s| State::parse(s.lines().next()?)).map(|s| s.due_ms) {
                let waited = (now - due).max(0) as u64;
                let entry = latency.entry(name.to_owned()).or_default();
                *entry = (*entry).max(waited);
            }
        }
        Ok(latency)
    }

    /// Workers that sent a heartbeat recently, with their last heartbeat.
    pub async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let mut conn = self.conn.clone();
        let live: Vec<(String, f64)> = conn.zrange_withscores(self.keys.workers(), 0, -1).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = live.iter().map(|(id, _)| self.keys.worker(id)).collect();
        let infos: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
        Ok(live
            .into_iter()
            .zip(infos)
            .filter_map(|((_, beat), info)| {
                let mut worker: WorkerInfo = serde_json::from_str(&info?).ok()?;
                worker.last_heartbeat = Some(from_millis(beat as i64));
                Some(worker)
            })
            .collect())
    }
}

fn string_at(reply: &[redis::Value], index: usize) -> StoreResult<String> {
    reply
        .get(index)
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("script reply lacks field {index}")))
}

/// The wait a `{'limited', ms}` reply names, at least 1 ms.
fn wait_at(reply: &[String]) -> u64 {
    reply.get(1).and_then(|ms| ms.parse().ok()).unwrap_or(1000).max(1)
}

fn status_at(reply: &[String]) -> StoreResult<JobStatus> {
    reply.get(1).and_then(|s| s.parse().ok()).ok_or_else(|| StoreError::Corrupt("script reply lacks a status".into()))
}

/// A record from READ's three columns; `None` when gone (or damaged, which is logged).
fn record_of(id: &str, columns: &[Option<String>]) -> Option<(JobRecord, History)> {
    let (spec, state) = (columns.first()?.as_deref()?, columns.get(1)?.as_deref()?);
    let result = columns.get(2).and_then(|r| r.as_deref());
    let found = JobRecord::from_columns(id, spec, state, result);
    if found.is_none() {
        tracing::error!(job.id = %id, "damaged job record");
    }
    found
}
