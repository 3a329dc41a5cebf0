//! Building the ENQUEUE call: every record string is made here, so the script
//! only files ranges of its arguments away.

use super::{EnqueueOutcome, IdempotencyClaim, JobStore, NewJob, RateLimit, string_at};
use crate::error::{StoreError, StoreResult};
use crate::events::entry_body;
use crate::model::JobStatus;
use crate::scripts;

impl JobStore {
    /// Creates `jobs` (all or none) in one round trip, claiming `idempotency` with them
    /// and taking them from the tenant's `limit` bucket (a replay takes nothing).
    /// Every record string is built here, so the script only files them away. All
    /// jobs of one call belong to one tenant (one request).
    pub async fn enqueue(
        &self,
        jobs: &[NewJob],
        idempotency: Option<&IdempotencyClaim>,
        limit: Option<RateLimit>,
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
        let events = entry_body(jobs.iter().map(|job| {
            (job.id.as_str(), format!("{}\t{}\t{}\t{}\t0\t{now}\t", job.tenant, job.kind, job.queue, status(job)))
        }));
        let tenant = jobs.first().map_or("default", |job| job.tenant.as_str());
        debug_assert!(jobs.iter().all(|job| job.tenant == tenant), "one tenant per enqueue");
        call.arg(events).arg(tenant).arg(now).arg(jobs.len());
        let limit = limit.filter(|limit| limit.per_sec > 0);
        call.arg(limit.map_or(0, |l| l.per_sec)).arg(limit.map_or(0, |l| l.burst));
        // Jobs go in queue order (stable, so each queue keeps submission order), making
        // every queue's ready or scheduled jobs one contiguous range.
        let mut order: Vec<&NewJob> = jobs.iter().collect();
        order.sort_by(|a, b| (a.queue.as_str(), a.run_at_ms > now).cmp(&(b.queue.as_str(), b.run_at_ms > now)));
        for job in &order {
            let status = status(job);
            call.arg(&job.id)
                .arg(format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{now}\t{}",
                    job.tenant,
                    job.kind,
                    job.queue,
                    job.max_attempts,
                    job.timeout_ms,
                    job.backoff_base_ms,
                    job.backoff_cap_ms,
                    job.payload
                ))
                .arg(format!("{status}\t0\t{}\t0\t0\n{status}\t0\t{now}\t", due(job)));
        }
        let ranges = ranges(&order, now);
        call.arg(ranges.len());
        for (queue, scheduled, from, members) in ranges {
            call.arg(queue).arg(if scheduled { "s" } else { "r" }).arg(from).arg(members.len());
            if scheduled {
                for job in members {
                    call.arg(job.run_at_ms);
                }
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
            "limited" => {
                let wait = reply.get(1).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok()).unwrap_or(1000);
                Ok(EnqueueOutcome::RateLimited { retry_after_ms: wait.max(1) })
            }
            other => Err(StoreError::Corrupt(format!("enqueue replied {other}"))),
        }
    }
}

/// One queue's ready (or scheduled) jobs: `(queue, scheduled, first index, jobs)`.
type Range<'a> = (&'a str, bool, usize, Vec<&'a NewJob>);

/// Splits jobs already in queue order into contiguous ranges of one queue and kind.
fn ranges<'a>(order: &[&'a NewJob], now: i64) -> Vec<Range<'a>> {
    let mut ranges: Vec<Range<'a>> = Vec::new();
    for (index, job) in order.iter().enumerate() {
        let scheduled = job.run_at_ms > now;
        match ranges.last_mut() {
            Some((queue, kind, _, members)) if *queue == job.queue && *kind == scheduled => members.push(job),
            _ => ranges.push((job.queue.as_str(), scheduled, index, vec![job])),
        }
    }
    ranges
}
