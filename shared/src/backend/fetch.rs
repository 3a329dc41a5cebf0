//! Claiming jobs, and waiting without polling when there are none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Value;

use super::{ClaimedJob, Inner, Lease};
use crate::backoff::Backoff;
use crate::error::StoreError;
use crate::jobs::Cancellation;
use crate::model::Spec;
use crate::scripts;

/// Claims this process has sent: numbers each one, so that a claim whose reply
/// was lost can be named to Redis (see heartbeat.lua).
static CLAIMS: AtomicU64 = AtomicU64::new(0);

/// Longest idle wait before claiming again (which also promotes due jobs).
const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);

/// Jobs that take at most this long on average are claimed ahead, while the
/// queue has a backlog (see [`JobTime::short`]).
const CLAIM_AHEAD_MAX_JOB_TIME: Duration = Duration::from_millis(2);

/// A running average of how long this worker's jobs take, kept by the ack
/// layer. It decides whether the next batch may be claimed while the current
/// one runs: a claimed-ahead job waits for a free slot, which is harmless when
/// jobs take a millisecond and would hold it from idle workers when they take
/// seconds.
pub(super) struct JobTime {
    /// Exponentially weighted average in microseconds; `u64::MAX` until the first job ends.
    micros: AtomicU64,
}

impl JobTime {
    pub(super) fn new() -> Self {
        Self { micros: AtomicU64::new(u64::MAX) }
    }

    /// Adds one job's run time, with weight 1/8. Concurrent updates may lose
    /// one sample, which an average does not miss.
    pub(super) fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        let average = self.micros.load(Ordering::Relaxed);
        let next = if average == u64::MAX { sample } else { average - average / 8 + sample / 8 };
        self.micros.store(next, Ordering::Relaxed);
    }

    /// Whether jobs are short enough to claim ahead (never before one has ended).
    pub(super) fn short(&self) -> bool {
        self.micros.load(Ordering::Relaxed) <= CLAIM_AHEAD_MAX_JOB_TIME.as_micros() as u64
    }
}

/// What one fetch brought.
pub(super) struct Batch {
    pub(super) jobs: Vec<ClaimedJob>,
    /// The claim took as many jobs as it asked for: more are probably ready.
    pub(super) full: bool,
    /// The claim drained the queues: where the next fetch waits from.
    pub(super) wait: Option<Wait>,
}

impl Batch {
    /// What a stopping fetch returns.
    fn stopped() -> Self {
        Self { jobs: Vec::new(), full: false, wait: None }
    }
}

/// Where to wait for work: on the wake stream after `wake_id`, at most until
/// the next scheduled or retrying job is due (`due_in`).
pub(super) struct Wait {
    wake_id: String,
    due_in: Option<Duration>,
}

/// A claim's reply: the jobs it took, and where to wait if it took fewer than asked.
struct Claim {
    jobs: Vec<ClaimedJob>,
    wait: Option<Wait>,
}

/// Claims the next batch, waiting as long as it takes: as many jobs as there are
/// free slots at the moment of each claim, at most `claim_batch`. `wait`, from
/// a claim that drained the queues, makes the first step a wait instead of a
/// claim that would find nothing. Returns empty only when the backend is
/// stopping. Redis errors are retried here, never surfaced.
///
/// `ahead`: a whole `claim_batch` for the slots the running jobs will free,
/// or nothing at once when nothing is ready (a claim ahead never waits).
pub(super) async fn next_batch(inner: Arc<Inner>, ahead: bool, mut wait: Option<Wait>) -> Batch {
    let mut stop = inner.stop.subscribe();
    let mut error_delay = Duration::from_millis(100);
    loop {
        if *stop.borrow_and_update() {
            return Batch::stopped();
        }
        if let Some(Wait { wake_id, due_in }) = wait.take() {
            let wait = due_in.map_or(MAX_IDLE_WAIT, |d| d.min(MAX_IDLE_WAIT));
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.changed() => return Batch::stopped(),
                    woken = wait_for_wake(&inner, &wake_id, wait) => {
                        if let Err(err) = woken {
                            tracing::warn!(error = %err, "idle wait failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
        let free = inner.settings.concurrency.saturating_sub(inner.running.load(Ordering::Relaxed));
        let limit = if ahead { inner.settings.claim_batch } else { free.clamp(1, inner.settings.claim_batch) };
        // Leases start at the claim, so their clock here starts before it is sent.
        let sent = Instant::now();
        let number = CLAIMS.fetch_add(1, Ordering::Relaxed);
        match claim(&inner, limit, number).await {
            Ok(claim) if claim.jobs.is_empty() && !ahead => {
                error_delay = Duration::from_millis(100);
                wait = claim.wait;
            }
            Ok(Claim { jobs, wait }) => {
                if !jobs.is_empty() {
                    metrics::counter!("jobs_claimed_total").increment(jobs.len() as u64);
                    if ahead {
                        metrics::counter!("jobs_claimed_ahead_total").increment(jobs.len() as u64);
                    }
                }
                hold(&inner, &jobs, sent, number);
                return Batch { full: jobs.len() == limit, jobs, wait };
            }
            Err(err) => {
                if err.is_outcome_unknown() {
                    // It may have leased jobs that nobody here knows about.
                    inner.lost_claims().push(number);
                }
                metrics::counter!("redis_errors_total", "op" => "claim").increment(1);
                tracing::warn!(error = %err, retry_in_ms = error_delay.as_millis() as u64, "claim failed; retrying");
                tokio::select! {
                    _ = stop.changed() => return Batch::stopped(),
                    _ = tokio::time::sleep(error_delay) => {}
                }
                error_delay = (error_delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn wait_for_wake(inner: &Inner, after: &str, wait: Duration) -> Result<(), StoreError> {
    let _: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(wait.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(inner.keys.wake())
        .arg(after)
        .query_async(&mut inner.blocking.clone())
        .await?;
    Ok(())
}

async fn claim(inner: &Inner, limit: usize, number: u64) -> Result<Claim, StoreError> {
    let settings = &inner.settings;
    let mut call = scripts::CLAIM.key(inner.keys.wake());
    call.arg(inner.keys.tag())
        .arg(settings.lease.as_millis() as u64)
        .arg(limit)
        .arg(settings.store.events_maxlen)
        .arg(settings.store.failed_ttl.as_millis() as u64)
        .arg(&settings.worker.id)
        .arg(number)
        .arg(settings.caps.tenant)
        .arg(&settings.caps.per_queue);
    for queue in inner.queue_args() {
        call.arg(queue);
    }
    let reply: Vec<Value> = call.invoke_async(&mut inner.conn.clone()).await?;
    parse_claim(&reply)
}

fn text(value: &Value) -> Result<String, StoreError> {
    redis::from_redis_value::<String>(value.clone()).map_err(|e| StoreError::Corrupt(format!("claim reply: {e}")))
}

fn number(value: &Value) -> Result<u64, StoreError> {
    redis::from_redis_value::<u64>(value.clone()).map_err(|e| StoreError::Corrupt(format!("claim reply: {e}")))
}

fn parse_claim(reply: &[Value]) -> Result<Claim, StoreError> {
    let claimed = reply.first().map(number).transpose()?.unwrap_or_default();
    let wake_id = reply.get(1).map(text).transpose()?.unwrap_or_default();
    let due: i64 = reply.get(2).and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok()).unwrap_or(-1);
    let wait =
        (!wake_id.is_empty()).then(|| Wait { wake_id, due_in: (due >= 0).then(|| Duration::from_millis(due as u64)) });
    let fields = reply.get(3..).unwrap_or_default();
    let mut jobs = Vec::with_capacity(fields.len() / 4);
    for f in fields.chunks_exact(4) {
        let id = text(&f[0])?;
        let spec =
            Spec::parse(&text(&f[3])?).ok_or_else(|| StoreError::Corrupt(format!("job {id} has a damaged spec")))?;
        jobs.push(ClaimedJob {
            attempt: number(&f[1])? as u32,
            token: number(&f[2])?,
            meta: spec.meta(),
            tenant: spec.tenant,
            kind: spec.kind,
            queue: spec.queue,
            payload: spec.payload,
            max_attempts: spec.max_attempts,
            timeout: Duration::from_millis(spec.timeout_ms),
            backoff: Backoff {
                base: Duration::from_millis(spec.backoff_base_ms),
                cap: Duration::from_millis(spec.backoff_cap_ms),
            },
            retention_secs: spec.retention_secs,
            cancel: Cancellation::default(),
            id,
        });
    }
    if jobs.len() as u64 != claimed {
        return Err(StoreError::Corrupt(format!("claim reply: {claimed} jobs announced, {} sent", jobs.len())));
    }
    Ok(Claim { jobs, wait })
}

/// Records the leases of freshly claimed runs, so heartbeats renew them.
pub(super) fn hold(inner: &Inner, jobs: &[ClaimedJob], sent: Instant, claim: u64) {
    let mut leases = inner.leases();
    for job in jobs {
        leases.insert(
            (job.id.clone(), job.token),
            Lease {
                meta: job.meta.clone(),
                queue: job.queue.clone(),
                cancel: job.cancel.clone(),
                renewed: sent,
                claim,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_jobs_on_average_allow_claiming_ahead() {
        let time = JobTime::new();
        assert!(!time.short(), "nothing is known before the first job ends");
        time.record(Duration::from_micros(50));
        assert!(time.short());
        for _ in 0..20 {
            time.record(Duration::from_millis(40));
        }
        assert!(!time.short(), "a run of long jobs turns claiming ahead off");
        for _ in 0..40 {
            time.record(Duration::from_micros(100));
        }
        assert!(time.short(), "and short jobs turn it back on");
    }

    fn bulk(items: &[&str]) -> Vec<Value> {
        items.iter().map(|s| Value::BulkString(s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn an_empty_claim_carries_the_wake_id_and_next_due_time() {
        let mut reply = vec![Value::Int(0)];
        reply.extend(bulk(&["5-0"]));
        reply.push(Value::Int(250));
        let claim = parse_claim(&reply).unwrap();
        assert!(claim.jobs.is_empty());
        let wait = claim.wait.expect("a drained claim says where to wait");
        assert_eq!(wait.wake_id, "5-0");
        assert_eq!(wait.due_in, Some(Duration::from_millis(250)));
    }

    fn one_job_reply(wake_id: &str) -> Vec<Value> {
        let mut reply = vec![Value::Int(1)];
        reply.extend(bulk(&[wake_id]));
        reply.push(Value::Int(-1));
        reply.extend(bulk(&["id1"]));
        reply.push(Value::Int(5));
        reply.extend(bulk(&["9"]));
        reply.extend(bulk(&["acme\tnoop\tdefault\t7\t1000\t10\t100\t1700000000000\t{}"]));
        reply
    }

    #[test]
    fn a_claim_decodes_id_attempt_token_and_spec_per_job() {
        let claim = parse_claim(&one_job_reply("")).unwrap();
        assert!(claim.wait.is_none(), "a full claim has no wait");
        let jobs = claim.jobs;
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].attempt, jobs[0].token, jobs[0].max_attempts), (5, 9, 7));
        assert_eq!(jobs[0].timeout, Duration::from_secs(1));
        assert_eq!(jobs[0].meta, "acme\tnoop\tdefault");
    }

    #[test]
    fn a_claim_short_of_its_limit_also_says_where_to_wait() {
        let claim = parse_claim(&one_job_reply("7-1")).unwrap();
        assert_eq!(claim.jobs.len(), 1);
        let wait = claim.wait.expect("a drained claim says where to wait");
        assert_eq!((wait.wake_id.as_str(), wait.due_in), ("7-1", None));
    }

    #[test]
    fn a_reply_whose_count_disagrees_with_its_jobs_is_corrupt() {
        let mut reply = one_job_reply("");
        reply[0] = Value::Int(2);
        assert!(matches!(parse_claim(&reply), Err(StoreError::Corrupt(_))));
    }
}
