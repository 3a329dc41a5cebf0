//! Building the ENQUEUE call: every record string is made here, so the script
//! only files ranges of its arguments away.

use super::{EnqueueOutcome, IdempotencyClaim, JobStore, NewJob, string_at};
use crate::error::{StoreError, StoreResult};
use crate::model::JobStatus;
use crate::scripts;

impl JobStore {
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
