//! Redis key layout. Every key the system touches is named here, once.
//!
//! All keys share one hash tag, `{<prefix>}`, so that every Lua script touches a
//! single slot and the layout runs unchanged on Redis Cluster (one slot per
//! deployment; several deployments, or test runs, share a Redis by prefix).
//! The Lua scripts build the same names from the tag they receive in `ARGV[1]`;
//! the `tag .. ':…'` expressions in `scripts/*.lua` mirror the functions below.

/// Key builder for one deployment prefix (`REDIS_PREFIX`, default `jobs`).
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { tag: format!("{{{prefix}}}") }
    }

    /// The hash tag itself, `{prefix}`: the first argument of every script.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// HASH — id → the job's fixed part, written once at enqueue:
    /// `tenant, type, queue, max_attempts, timeout_ms, backoff_base_ms,
    /// backoff_cap_ms, created_ms, payload`, tab-separated (payload last).
    /// Jobs live in column hashes rather than a hash per job so that a batch of
    /// jobs costs one command per column instead of one per job.
    pub fn spec(&self) -> String {
        format!("{}:spec", self.tag)
    }

    /// HASH — id → the job's mutable part: a header line `status, attempts,
    /// due_ms, cancel (0|1), expires_ms, runs, flags, total`, then its last 50
    /// transitions, one line each: `status, attempt, at_ms, error` (all
    /// tab-separated). `due_ms` is when it was (or will be) due; `expires_ms` is
    /// when a finished record is deleted (0 while live); `runs` is the latest
    /// claim's fencing token; `flags` holds `l` while the id is on its ready list
    /// and `o` while the latest run's outcome is accepted; `total` counts every
    /// transition. Keeping the history in the same value makes a transition one
    /// read and one write (see `scripts/lib.lua`).
    pub fn state(&self) -> String {
        format!("{}:state", self.tag)
    }

    /// HASH — id → the result JSON of a succeeded job (absent when null).
    pub fn result(&self) -> String {
        format!("{}:result", self.tag)
    }

    /// LIST — ids whose retention ends in second `second` (ms / 1,000). ACK and
    /// REAP sweep expired seconds and delete their records from the column
    /// hashes, unless a job was retried since. Succeeded records are
    /// kept `SUCCEEDED_TTL_SECS`, failed and cancelled ones `FAILED_TTL_SECS`.
    pub fn gc_bucket(&self, second: u64) -> String {
        format!("{}:gc:{second}", self.tag)
    }

    /// LIST — with SUCCEEDED_MAX_PER_QUEUE: `id \t expires_ms` of `tenant`'s
    /// latest successes on `queue`, oldest first, at most that many; ACK deletes
    /// the records that fall off its head (unless retried or deleted since).
    pub fn succeeded(&self, queue: &str, tenant: &str) -> String {
        format!("{}:q:{queue}:t:{tenant}:succeeded", self.tag)
    }

    /// STRING — the oldest retention second not yet swept.
    pub fn gc_cursor(&self) -> String {
        format!("{}:gc:cursor", self.tag)
    }

    /// LIST — ids of `tenant` ready to run on `queue`, oldest first (RPUSH / LPOP).
    /// Ready jobs wait per queue and tenant so that tenants take turns (see [`Keys::ring`]).
    pub fn ready(&self, queue: &str, tenant: &str) -> String {
        format!("{}:q:{queue}:t:{tenant}:ready", self.tag)
    }

    /// LIST — the tenants with ready jobs on `queue`, each once: CLAIM visits them
    /// in turn (LMOVE head to tail), and a tenant whose list empties leaves.
    pub fn ring(&self, queue: &str) -> String {
        format!("{}:q:{queue}:ring", self.tag)
    }

    /// LIST — the queues with ready jobs, each once: a worker serving every queue
    /// visits them in turn. A queue whose ring empties leaves.
    pub fn ready_queues(&self) -> String {
        format!("{}:ready", self.tag)
    }

    /// ZSET — queues with scheduled or retrying jobs, scored by the earliest due
    /// time (ms): CLAIM promotes only the queues that have something due.
    pub fn due(&self) -> String {
        format!("{}:due", self.tag)
    }

    /// SET — queues with leases (running jobs): what REAP looks at.
    pub fn busy(&self) -> String {
        format!("{}:busy", self.tag)
    }

    /// ZSET — ids scheduled for a first run on `queue` (`delay_ms`/`run_at`), scored by due time in ms.
    pub fn scheduled(&self, queue: &str) -> String {
        format!("{}:q:{queue}:scheduled", self.tag)
    }

    /// ZSET — ids waiting for their next attempt after a failure, scored by due time in ms.
    pub fn retry(&self, queue: &str) -> String {
        format!("{}:q:{queue}:retry", self.tag)
    }

    /// HASH — ids running on `queue` → `expiry_ms \t worker \t claim`. A worker renews the
    /// leases of its jobs; the reaper takes back any whose lease ran out. It holds
    /// only the jobs in flight, so the reaper scans it whole. Plus one field,
    /// [`RUNNING_PIN`], that keeps it a hash table (see `scripts/lib.lua`).
    pub fn running(&self, queue: &str) -> String {
        format!("{}:q:{queue}:running", self.tag)
    }

    /// ZSET — ids of `tenant` that ended `failed` on `queue`, scored by finish time
    /// in ms; an id leaves when the job is retried or its record deleted.
    pub fn failed(&self, queue: &str, tenant: &str) -> String {
        format!("{}:q:{queue}:t:{tenant}:failed", self.tag)
    }

    /// SET — every queue name jobs have named (bounded by TENANT_MAX_QUEUES per
    /// tenant, or QUEUES_ALLOWED): for operators' views only; no script walks it.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.tag)
    }

    /// SET — the queues `tenant` has jobs in, in any status: at most
    /// TENANT_MAX_QUEUES. A queue leaves once the tenant's last record there is deleted.
    pub fn tenant_queues(&self, tenant: &str) -> String {
        format!("{}:t:{tenant}:queues", self.tag)
    }

    /// SET — every tenant that has ever submitted a job (drives index pruning).
    pub fn tenants(&self) -> String {
        format!("{}:tenants", self.tag)
    }

    /// HASH — a tenant's usage, kept exactly by every script: `live` (jobs not
    /// yet finished) and `bytes` (stored specs, until their records are deleted),
    /// checked against TENANT_MAX_LIVE_JOBS and TENANT_MAX_BYTES at enqueue.
    pub fn tenant_usage(&self, tenant: &str) -> String {
        format!("{}:t:{tenant}:usage", self.tag)
    }

    /// STRING — recipients a tenant's `email.send` jobs addressed on UTC day
    /// `day` (ms / 86,400,000), checked against EMAIL_DAILY_RECIPIENTS at
    /// enqueue; expires after two days.
    pub fn tenant_email_day(&self, tenant: &str, day: u64) -> String {
        format!("{}:t:{tenant}:email:{day}", self.tag)
    }

    /// ZSET — a tenant's job ids scored by creation time in ms × 1000 + the job's
    /// position in its request (so a batch keeps its order): the listing index,
    /// newest first. Entries whose record expired are pruned lazily and by the reaper.
    pub fn tenant_jobs(&self, tenant: &str) -> String {
        format!("{}:t:{tenant}:jobs", self.tag)
    }

    /// HASH — the tenant's jobs counted by queue and status, fields `queue \t status`;
    /// every script that changes a status keeps it (see lib.lua `count`).
    pub fn tenant_counts(&self, tenant: &str) -> String {
        format!("{}:t:{tenant}:counts", self.tag)
    }

    /// STRING — an `Idempotency-Key` claim, scoped per tenant: `<fingerprint>\t<id>[,<id>…]`,
    /// expiring after `IDEMPOTENCY_TTL_SECS`.
    pub fn idempotency(&self, tenant: &str, key: &str) -> String {
        format!("{}:idem:{tenant}:{key}", self.tag)
    }

    /// HASH — a tenant's submission token bucket, `t` (tokens left) and `ts` (last
    /// refill, server ms); expires once it would be full again. Kept by ENQUEUE.
    pub fn rate_limit(&self, tenant: &str) -> String {
        format!("{}:rl:{tenant}", self.tag)
    }

    /// STREAM — every status transition. One entry per script call carrying all of
    /// that call's transitions in field `e` (one line each, see `events.rs`);
    /// trimmed to about `EVENTS_MAXLEN` entries.
    pub fn events(&self) -> String {
        format!("{}:events", self.tag)
    }

    /// STREAM — wake-ups for idle workers: one tiny entry per enqueue call, capped
    /// at 100 entries. Idle workers `XREAD BLOCK` on it from the id their last
    /// empty claim returned, so no push between the two is missed.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.tag)
    }

    /// ZSET — live worker ids scored by their last heartbeat in ms.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.tag)
    }

    /// STRING — one worker's description (JSON: host, pid, queues, concurrency,
    /// started_at), expiring three leases after its last heartbeat.
    pub fn worker(&self, id: &str) -> String {
        format!("{}:worker:{id}", self.tag)
    }

    /// STRING — a counter the API increments just before each replica wait
    /// (`ENQUEUE_WAIT_REPLICAS`): a wait covers its own connection's writes, and
    /// this one comes after every enqueue Redis ran before it.
    pub fn durable_tick(&self) -> String {
        format!("{}:durable", self.tag)
    }

    /// STRING — when the last REAP ran (ms); a gap of a whole lease means nobody
    /// could renew a lease, and the next REAP restarts them all.
    pub fn reap_last(&self) -> String {
        format!("{}:reap:last", self.tag)
    }

    /// HASH — applied schema migrations: `<name>` → SHA-256 of the script.
    pub fn migrations(&self) -> String {
        format!("{}:migrations", self.tag)
    }

    /// STRING — the schema version (number of the last applied migration).
    pub fn schema_version(&self) -> String {
        format!("{}:schema_version", self.tag)
    }

    /// STRING — lock held (SET NX PX) while one process applies migrations.
    pub fn migrations_lock(&self) -> String {
        format!("{}:migrations:lock", self.tag)
    }
}

/// The field of a `running` hash that is not a lease: its long value keeps
/// Redis from storing the hash as a listpack, and never expires.
pub const RUNNING_PIN: &str = "~";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_deployment_hash_tag() {
        let k = Keys::new("jobs");
        for key in [
            k.spec(),
            k.state(),
            k.result(),
            k.gc_bucket(1),
            k.gc_cursor(),
            k.ready("q", "t"),
            k.ring("q"),
            k.ready_queues(),
            k.due(),
            k.busy(),
            k.tenant_queues("t"),
            k.scheduled("q"),
            k.retry("q"),
            k.running("q"),
            k.failed("q", "t"),
            k.queues(),
            k.tenants(),
            k.tenant_jobs("t"),
            k.idempotency("t", "k"),
            k.events(),
            k.wake(),
            k.workers(),
            k.worker("w"),
            k.durable_tick(),
            k.reap_last(),
            k.migrations(),
            k.schema_version(),
            k.migrations_lock(),
        ] {
            assert!(key.starts_with("{jobs}:"), "{key}");
        }
    }
}
