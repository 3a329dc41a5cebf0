//! What the store takes and gives: new jobs, outcomes, filters, pages, stats.

use serde::Serialize;

use crate::model::{JobRecord, JobStatus};

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
    pub when: When,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Seconds its record is kept once it succeeds (`None`: the deployment's).
    pub retention_secs: Option<u64>,
    /// Email recipients it addresses, counted against the tenant's daily
    /// `email.send` quota (0 for other types).
    pub recipients: u32,
}

/// When a new job is first due. Delays count from the moment Redis stores the
/// job, on Redis's clock, so the API host's clock plays no part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    #[default]
    Now,
    /// This many milliseconds after it is stored.
    After(u64),
    /// At this time, in ms since the epoch; a time already past means now.
    At(i64),
}

impl When {
    /// The due time of a job stored at `now_ms`.
    pub fn due_ms(self, now_ms: i64) -> i64 {
        match self {
            Self::Now => now_ms,
            Self::After(delay) => now_ms + delay as i64,
            Self::At(at) => at.max(now_ms),
        }
    }

    /// How ENQUEUE reads it (see enqueue.lua).
    pub(crate) fn arg(self) -> String {
        match self {
            Self::Now => String::new(),
            Self::After(delay) => format!("+{delay}"),
            Self::At(at) => format!("@{at}"),
        }
    }
}

/// What an enqueue waits for before it answers, beyond Redis's memory: copies on
/// replicas (`WAIT`) and the local append-only file on disk (`WAITAOF`, Redis ≥
/// 7.2). Without it, an acknowledged job survives a crash of the Redis process
/// (AOF `everysec`), but not a crash of its host or a failover to a replica:
/// those lose up to about a second of acknowledged jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Replicas that must hold the write; 0 = none.
    pub replicas: u32,
    /// Wait for the local AOF fsync too.
    pub local_aof: bool,
    /// Longest wait; past it the enqueue fails with [`crate::error::StoreError::NotDurable`].
    pub timeout: std::time::Duration,
}

impl Durability {
    pub fn waits(&self) -> bool {
        self.replicas > 0 || self.local_aof
    }
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
    /// The tenant's rate limit holds these jobs back; nothing was stored.
    RateLimited { retry_after_ms: u64 },
    /// The jobs would take the tenant past its cap on queues; nothing was stored.
    TooManyQueues { cap: u32 },
    /// The jobs would take the tenant past a quota; nothing was stored.
    QuotaExceeded { quota: Quota, used: u64, cap: u64 },
}

/// Which of a tenant's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Live (unfinished) jobs: `TENANT_MAX_LIVE_JOBS`.
    LiveJobs,
    /// Bytes of stored jobs: `TENANT_MAX_BYTES`.
    Bytes,
    /// Recipients of `email.send` jobs today (UTC): `EMAIL_DAILY_RECIPIENTS`;
    /// the count starts again in `renews_in_ms`.
    EmailRecipients { renews_in_ms: u64 },
}

/// What one tenant may submit; the scripts enforce it, so it holds across API instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimits {
    pub rate: Option<RateLimit>,
    /// Most queues the tenant may have jobs in at once (0 = no cap).
    pub max_queues: u32,
    /// Most live (unfinished) jobs it may have (0 = no cap).
    pub max_live_jobs: u64,
    /// Most bytes of stored jobs (their specs: payloads and settings) it may have (0 = no cap).
    pub max_bytes: u64,
    /// Most recipients its `email.send` jobs may address in a UTC day (0 = no cap).
    pub email_recipients_per_day: u64,
}

/// A tenant's submission limit: a token bucket of `burst` jobs refilled at
/// `per_sec` jobs a second, kept in Redis so that it holds across API instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    Cancelled,
    /// The job is running: it was flagged, and will not be retried.
    Flagged,
    Conflict(JobStatus),
    NotFound,
    /// The tenant's rate limit holds it back: retry after this many ms.
    RateLimited {
        retry_after_ms: u64,
    },
}

/// Outcome of a retry request.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    Queued,
    Conflict(JobStatus),
    NotFound,
    /// The tenant's rate limit holds it back: retry after this many ms.
    RateLimited {
        retry_after_ms: u64,
    },
}

/// Outcome of a retry of a queue's failed jobs.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryFailedOutcome {
    /// This many were queued again; `more` when failed jobs remain.
    Retried { retried: usize, more: bool },
    /// The tenant's rate limit holds them back: retry after this many ms.
    RateLimited { retry_after_ms: u64 },
}

/// Whether records read for a listing or a snapshot carry their payloads: a
/// payload can be 64 KiB, so pages of records carry them only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payloads {
    #[default]
    Omit,
    Include,
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

/// Per-queue counts of jobs by status.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct QueueStats {
    pub name: String,
    pub queued: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// How long the oldest ready job (any tenant's) has waited since it became due,
    /// in ms; shown to `admin` tokens only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl QueueStats {
    pub fn empty(name: String) -> Self {
        Self {
            name,
            queued: 0,
            scheduled: 0,
            running: 0,
            retrying: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            latency_ms: None,
        }
    }

    pub fn count(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Scheduled => self.scheduled,
            JobStatus::Running => self.running,
            JobStatus::Retrying => self.retrying,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    pub(crate) fn count_mut(&mut self, status: JobStatus) -> &mut u64 {
        match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Scheduled => &mut self.scheduled,
            JobStatus::Running => &mut self.running,
            JobStatus::Retrying => &mut self.retrying,
            JobStatus::Succeeded => &mut self.succeeded,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        }
    }
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

impl ListFilter {
    pub(super) fn matches(&self, record: &JobRecord) -> bool {
        self.status.is_none_or(|s| s == record.status)
            && self.queue.as_deref().is_none_or(|q| q == record.queue)
            && self.kind.as_deref().is_none_or(|k| k == record.kind)
    }
}
