//! `JobStore`: the API's side of the Redis data model — enqueue, read, list,
//! cancel, retry, queue statistics. Every write is one script call.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use crate::error::{StoreError, StoreResult};
use crate::keys::Keys;
use crate::model::{HistoryEntry, JobRecord, JobStatus, from_millis};
use crate::scripts;

/// Retention and trimming settings every writer applies.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub prefix: String,
    /// How long a succeeded record is kept.
    pub succeeded_ttl: Duration,
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
            failed_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            events_maxlen: 100_000,
        }
    }
}

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

/// A job to create, already validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    /// The payload as JSON text.
    pub payload: String,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// When to run, in ms since the epoch; 0 = now.
    pub run_at_ms: i64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
}

/// An `Idempotency-Key` to claim together with the jobs it creates.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    /// A hash of the request, to tell a replay from a reuse with another body.
    pub fingerprint: String,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq)]
pub enum EnqueueOutcome {
    /// The jobs were created at this server time (ms).
    Created { at_ms: i64 },
    /// The key was already claimed by the same request: these jobs, nothing new.
    Replayed { ids: Vec<String> },
    /// The key was already claimed by a different request.
    KeyReused,
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    Cancelled,
    /// The job is running: it was flagged, and will not be retried.
    Flagged,
    Conflict(JobStatus),
    NotFound,
}

/// Outcome of a retry request.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    Queued,
    Conflict(JobStatus),
    NotFound,
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    pub queue: Option<String>,
    pub kind: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Per-queue counts.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct QueueStats {
    pub name: String,
    pub queued: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub failed: u64,
}

/// A live worker, as registered by its heartbeat.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Queues it serves; empty = all.
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub started_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
}

/// The API's handle on the job data. Cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    conn: ConnectionManager,
    keys: Keys,
    config: StoreConfig,
}

/// Groups jobs by a key, keeping first-seen order; jobs whose key is `None` are left out.
fn group<'a>(jobs: &'a [NewJob], key: impl Fn(&'a NewJob) -> Option<&'a str>) -> Vec<(&'a str, Vec<&'a NewJob>)> {
    let mut groups: Vec<(&str, Vec<&NewJob>)> = Vec::new();
    for job in jobs {
        let Some(name) = key(job) else { continue };
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(job),
            None => groups.push((name, vec![job])),
        }
    }
    groups
}

/// Most index entries a listing examines per request, so a filter that matches
/// little cannot make one request scan everything.
const LIST_SCAN_BUDGET: usize = 2_000;

impl JobStore {
    pub fn new(conn: ConnectionManager, config: StoreConfig) -> Self {
        Self { keys: Keys::new(&config.prefix), conn, config }
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

    /// Creates `jobs` (all or none) in one round trip, claiming `idempotency` with them.
    /// Every record string is built here, so the script only files them away.
    pub async fn enqueue(
        &self,
        jobs: &[NewJob],
        idempotency: Option<&IdempotencyClaim>,
    ) -> StoreResult<EnqueueOutcome> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut call = scripts::ENQUEUE.key(self.keys.events());
        call.arg(self.keys.tag()).arg(self.config.events_maxlen);
        match idempotency {
            Some(claim) => {
                let tenant = jobs.first().map_or("default", |job| job.tenant.as_str());
                call.arg(self.keys.idempotency(tenant, &claim.key)).arg(&claim.fingerprint)
            }
            None => call.arg("").arg(""),
        };
        let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        call.arg(self.config.idempotency_ttl.as_secs().max(1)).arg(ids.join(","));
        let due = |job: &NewJob| job.run_at_ms.max(now);
        let status = |job: &NewJob| if job.run_at_ms > now { JobStatus::Scheduled } else { JobStatus::Queued };
        let events: Vec<String> = jobs
            .iter()
            .map(|job| format!("{}\t{}\t{}\t{}\t{}\t0\t{now}\t", job.id, job.tenant, job.kind, job.queue, status(job)))
            .collect();
        call.arg(events.join("\n")).arg(jobs.len());
        for job in jobs {
            call.arg(&job.id).arg(format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{now}\t{}",
                job.tenant,
                job.kind,
                job.queue,
                job.max_attempts,
                job.timeout_ms,
                job.backoff_base_ms,
                job.backoff_cap_ms,
                job.payload
            ));
        }
        for job in jobs {
            let status = status(job);
            call.arg(&job.id).arg(format!("{status}\t0\t{}\t0\t0\n{status}\t0\t{now}\t", due(job)));
        }
        let by_tenant = group(jobs, |job| Some(job.tenant.as_str()));
        call.arg(by_tenant.len());
        for (tenant, members) in &by_tenant {
            call.arg(*tenant).arg(members.len());
            for job in members {
                call.arg(now).arg(&job.id);
            }
        }
        let ready = group(jobs, |job| (job.run_at_ms <= now).then_some(job.queue.as_str()));
        call.arg(ready.len());
        for (queue, members) in &ready {
            call.arg(*queue).arg(members.len());
            for job in members {
                call.arg(&job.id);
            }
        }
        let scheduled = group(jobs, |job| (job.run_at_ms > now).then_some(job.queue.as_str()));
        call.arg(scheduled.len());
        for (queue, members) in &scheduled {
            call.arg(*queue).arg(members.len());
            for job in members {
                call.arg(job.run_at_ms).arg(&job.id);
            }
        }
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await?;
        let tag = string_at(&reply, 0)?;
        match tag.as_str() {
            "created" => Ok(EnqueueOutcome::Created { at_ms: now }),
            "replay" => {
                Ok(EnqueueOutcome::Replayed { ids: string_at(&reply, 1)?.split(',').map(str::to_owned).collect() })
            }
            "mismatch" => Ok(EnqueueOutcome::KeyReused),
            other => Err(StoreError::Corrupt(format!("enqueue replied {other}"))),
        }
    }

    /// A job of `tenant` with its history; `None` if unknown, expired or another tenant's.
    pub async fn get(&self, tenant: &str, id: &str) -> StoreResult<Option<(JobRecord, Vec<HistoryEntry>)>> {
        Ok(self
            .records(std::slice::from_ref(&id.to_owned()))
            .await?
            .pop()
            .flatten()
            .filter(|(r, _)| r.tenant == tenant))
    }

    /// Reads records with their histories in one round trip; `None` for those gone.
    async fn records(&self, ids: &[String]) -> StoreResult<Vec<Option<(JobRecord, Vec<HistoryEntry>)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply: Vec<Option<String>> = scripts::READ
            .key(self.keys.spec())
            .arg(self.keys.tag())
            .arg(ids)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ids
            .iter()
            .zip(reply.chunks(3))
            .map(|(id, columns)| {
                let (spec, state) = (columns.first()?.as_deref()?, columns.get(1)?.as_deref()?);
                let result = columns.get(2).and_then(|r| r.as_deref());
                let found = JobRecord::from_columns(id, spec, state, result);
                if found.is_none() {
                    tracing::error!(job.id = %id, "damaged job record");
                }
                found
            })
            .collect())
    }

    /// A page of `tenant`'s jobs, newest first. The cursor is opaque to clients.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<JobPage> {
        let index = self.keys.tenant_jobs(tenant);
        let mut conn = self.conn.clone();
        let mut position = cursor.and_then(Cursor::parse);
        let mut jobs = Vec::new();
        let mut examined = 0;
        let page = 200;
        loop {
            let max = position.as_ref().map_or("+inf".to_owned(), |c| c.score.to_string());
            let entries: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut conn)
                .await?;
            let fresh: Vec<(String, f64)> = entries
                .into_iter()
                .filter(|(id, score)| position.as_ref().is_none_or(|c| c.is_after(id, *score)))
                .collect();
            if fresh.is_empty() {
                return Ok(JobPage { jobs, next_cursor: None });
            }
            let ids: Vec<String> = fresh.iter().map(|(id, _)| id.clone()).collect();
            let records = self.records(&ids).await?;
            let mut gone = Vec::new();
            for ((id, score), found) in fresh.iter().zip(records) {
                examined += 1;
                position = Some(Cursor { score: *score, id: id.clone() });
                match found {
                    None => gone.push(id.clone()),
                    Some((record, _)) if filter.matches(&record) => jobs.push(record),
                    Some(_) => {}
                }
                if jobs.len() == limit {
                    break;
                }
            }
            if !gone.is_empty() {
                let _: () = conn.zrem(&index, gone).await?;
            }
            if jobs.len() == limit || examined >= LIST_SCAN_BUDGET {
                return Ok(JobPage { jobs, next_cursor: position.map(|c| c.encode()) });
            }
        }
    }

    /// Cancels a waiting job or flags a running one.
    pub async fn cancel(&self, tenant: &str, id: &str) -> StoreResult<CancelOutcome> {
        let reply: Vec<String> = scripts::CANCEL
            .key(self.keys.state())
            .arg(self.keys.tag())
            .arg(id)
            .arg(tenant)
            .arg(self.config.events_maxlen)
            .arg(self.config.failed_ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("cancelled") => CancelOutcome::Cancelled,
            Some("flagged") => CancelOutcome::Flagged,
            Some("conflict") => CancelOutcome::Conflict(status_at(&reply)?),
            _ => CancelOutcome::NotFound,
        })
    }

    /// Queues a failed or cancelled job again with a fresh attempt budget.
    pub async fn retry(&self, tenant: &str, id: &str) -> StoreResult<RetryOutcome> {
        let reply: Vec<String> = scripts::RETRY
            .key(self.keys.state())
            .arg(self.keys.tag())
            .arg(id)
            .arg(tenant)
            .arg(self.config.events_maxlen)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("queued") => RetryOutcome::Queued,
            Some("conflict") => RetryOutcome::Conflict(status_at(&reply)?),
            _ => RetryOutcome::NotFound,
        })
    }

    /// Counts per queue, in one pipelined round trip after the queue list.
    pub async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = conn.smembers(self.keys.queues()).await?;
        names.sort();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.llen(self.keys.ready(name))
                .zcard(self.keys.scheduled(name))
                .hlen(self.keys.running(name))
                .zcard(self.keys.retry(name))
                .zcard(self.keys.failed(name));
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(names
            .into_iter()
            .zip(counts.chunks(5))
            .map(|(name, c)| QueueStats {
                name,
                queued: c[0],
                scheduled: c[1],
                running: c[2],
                retrying: c[3],
                failed: c[4],
            })
            .collect())
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

    /// PING: is Redis answering?
    pub async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

impl ListFilter {
    fn matches(&self, record: &JobRecord) -> bool {
        self.status.is_none_or(|s| s == record.status)
            && self.queue.as_deref().is_none_or(|q| q == record.queue)
            && self.kind.as_deref().is_none_or(|k| k == record.kind)
    }
}

/// Position in a tenant's index: the last entry returned. Entries are ordered by
/// score, then id, both descending (as ZREVRANGEBYSCORE returns them).
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    score: f64,
    id: String,
}

impl Cursor {
    fn parse(text: &str) -> Option<Self> {
        let (score, id) = text.split_once('.')?;
        Some(Self { score: score.parse().ok()?, id: id.to_owned() })
    }

    fn encode(&self) -> String {
        format!("{}.{}", self.score as i64, self.id)
    }

    fn is_after(&self, id: &str, score: f64) -> bool {
        score < self.score || (score == self.score && id < self.id.as_str())
    }
}

fn string_at(reply: &[redis::Value], index: usize) -> StoreResult<String> {
    reply
        .get(index)
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("script reply lacks field {index}")))
}

fn status_at(reply: &[String]) -> StoreResult<JobStatus> {
    reply.get(1).and_then(|s| s.parse().ok()).ok_or_else(|| StoreError::Corrupt("script reply lacks a status".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_orders_by_score_then_id_descending() {
        let c = Cursor { score: 10.0, id: "m".into() };
        assert!(c.is_after("z", 9.0));
        assert!(c.is_after("a", 10.0));
        assert!(!c.is_after("m", 10.0));
        assert!(!c.is_after("z", 10.0));
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
    }
}
