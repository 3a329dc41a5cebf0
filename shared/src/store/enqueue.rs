//! Building the ENQUEUE call: each job's strings are sent once; the script adds
//! Redis's time and files them away.

use super::{EnqueueOutcome, IdempotencyClaim, JobStore, NewJob, Quota, TenantLimits, string_at};
use crate::error::{StoreError, StoreResult};
use crate::scripts;

impl JobStore {
    /// Creates `jobs` (all or none) in one round trip, claiming `idempotency` with them,
    /// taking them from the tenant's rate bucket (a replay takes nothing) and keeping
    /// its queues within `limits`.
    /// The script stamps every job with Redis's time, which `Created` returns. All
    /// jobs of one call belong to one tenant (one request).
    pub async fn enqueue(
        &self,
        jobs: &[NewJob],
        idempotency: Option<&IdempotencyClaim>,
        limits: TenantLimits,
    ) -> StoreResult<EnqueueOutcome> {
        let tenant = jobs.first().map_or("default", |job| job.tenant.as_str());
        debug_assert!(jobs.iter().all(|job| job.tenant == tenant), "one tenant per enqueue");
        let mut call = scripts::ENQUEUE.key(self.keys.events());
        call.arg(self.keys.tag()).arg(self.config.events_maxlen);
        match idempotency {
            Some(claim) => call.arg(self.keys.idempotency(tenant, &claim.key)).arg(&claim.fingerprint),
            None => call.arg("").arg(""),
        };
        let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        call.arg(self.config.idempotency_ttl.as_secs().max(1)).arg(ids.join(","));
        call.arg(tenant).arg(jobs.len());
        let rate = limits.rate.filter(|rate| rate.per_sec > 0);
        call.arg(rate.map_or(0, |l| l.per_sec)).arg(rate.map_or(0, |l| l.burst));
        call.arg(limits.max_queues).arg(limits.max_live_jobs).arg(limits.max_bytes);
        let recipients: u64 = jobs.iter().map(|job| u64::from(job.recipients)).sum();
        call.arg(limits.email_recipients_per_day).arg(recipients);
        // Jobs go in queue order (stable, so each queue keeps submission order),
        // making every queue's jobs one contiguous range.
        let mut order: Vec<&NewJob> = jobs.iter().collect();
        order.sort_by(|a, b| a.queue.cmp(&b.queue));
        for job in &order {
            // The job's own retention, or '' for the deployment's.
            let retention = job.retention_secs.map(|secs| secs.to_string()).unwrap_or_default();
            call.arg(&job.id)
                .arg(format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{retention}",
                    job.tenant,
                    job.kind,
                    job.queue,
                    job.max_attempts,
                    job.timeout_ms,
                    job.backoff_base_ms,
                    job.backoff_cap_ms,
                ))
                .arg(&job.payload)
                .arg(job.when.arg());
        }
        let ranges = ranges(&order);
        call.arg(ranges.len());
        for (queue, first, count) in ranges {
            call.arg(queue).arg(first).arg(count);
        }
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await?;
        let tag = string_at(&reply, 0)?;
        if let (true, Some(durable)) = (tag == "created" || tag == "replay", &self.durable) {
            // A replay waits too: the write it replays may not be on the replicas yet.
            durable.wait().await?;
        }
        match tag.as_str() {
            "created" => {
                let at_ms = reply.get(1).and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok());
                let at_ms = at_ms.ok_or_else(|| StoreError::Corrupt("enqueue replied without its time".into()))?;
                Ok(EnqueueOutcome::Created { at_ms })
            }
            "replay" => {
                Ok(EnqueueOutcome::Replayed { ids: string_at(&reply, 1)?.split(',').map(str::to_owned).collect() })
            }
            "mismatch" => Ok(EnqueueOutcome::KeyReused),
            "quota_exceeded" => {
                let number = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok());
                let quota = match string_at(&reply, 1)?.as_str() {
                    "live" => Quota::LiveJobs,
                    "email" => Quota::EmailRecipients { renews_in_ms: number(4).unwrap_or(1000) },
                    _ => Quota::Bytes,
                };
                Ok(EnqueueOutcome::QuotaExceeded {
                    quota,
                    used: number(2).unwrap_or_default(),
                    cap: number(3).unwrap_or_default(),
                })
            }
            "too_many_queues" => {
                let cap = reply.get(1).and_then(|v| redis::from_redis_value::<u32>(v.clone()).ok()).unwrap_or_default();
                Ok(EnqueueOutcome::TooManyQueues { cap })
            }
            "limited" => {
                let wait = reply.get(1).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok()).unwrap_or(1000);
                Ok(EnqueueOutcome::RateLimited { retry_after_ms: wait.max(1) })
            }
            other => Err(StoreError::Corrupt(format!("enqueue replied {other}"))),
        }
    }
}

/// Splits jobs already in queue order into contiguous ranges of one queue:
/// `(queue, first index, count)`.
fn ranges<'a>(order: &[&'a NewJob]) -> Vec<(&'a str, usize, usize)> {
    let mut ranges: Vec<(&'a str, usize, usize)> = Vec::new();
    for (index, job) in order.iter().enumerate() {
        match ranges.last_mut() {
            Some((queue, _, count)) if *queue == job.queue => *count += 1,
            _ => ranges.push((job.queue.as_str(), index, 1)),
        }
    }
    ranges
}
