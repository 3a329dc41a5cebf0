//! Our Redis backend for apalis: implements apalis-core's `Backend` and
//! `BackendConfig` over the data model in `keys.rs`.
//!
//! Shape (see `scripts/*.lua` for each step):
//! - `poll_next` serves jobs from a local buffer, refilled by one CLAIM of as
//!   many jobs as there are free slots (at most `claim_batch`), so a busy
//!   worker does not hoard jobs that an idle one could run. When nothing is
//!   ready it blocks on the wake stream (on its own connection) from the id
//!   CLAIM returned, so no enqueue in between is missed, and for no longer
//!   than the next scheduled job is due.
//! - While the queue has a backlog and this worker's jobs take at most 2 ms on
//!   average, it also claims up to two batches ahead, so Redis prepares the
//!   next batches while the current one runs (no-op jobs: +28% jobs/s). A
//!   claimed-ahead job waits about one job's run time for its slot. Jobs that
//!   turn long can hold at most two batches for the length of one such job.
//! - Outcomes reach Redis through [`AckLayer`], the backend's layer, which the
//!   apalis Worker wraps around every handler call. A background task (the
//!   acker) flushes them in batches, renews leases, and reaps expired ones.
//! - Every claim starts a run of its job with a fencing token (the job's claim
//!   count, which never goes back), and this process tracks what it holds by
//!   `(job id, token)`: after a pause it can hold a stale and a live run of one
//!   job, and neither touches the other's lease. Outcomes, heartbeats and
//!   hand-backs name their run; Redis records only the current run's.
//! - A run whose lease is lost (a heartbeat says it was taken, or none could
//!   renew it for a whole lease) has its handler cancelled and its outcome
//!   dropped (`jobs_outcomes_dropped_total`).
//! - Redis errors never leave the backend (apalis ends a worker on any backend
//!   error): fetches and flushes retry with backoff until Redis is back.
//! - Closing hands back claimed-but-unstarted jobs at once (RELEASE) and
//!   flushes every pending outcome.

mod ack;
mod acker;
mod fetch;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, watch};

pub use ack::{AckLayer, AckService};
pub use acker::reap;

use crate::backoff::Backoff;
use crate::error::StoreError;
use crate::jobs::Cancellation;
use crate::keys::Keys;
use crate::scripts;
use crate::store::{StoreConfig, WorkerInfo};

/// Most claims in flight at once while claiming ahead.
const CLAIMS_AHEAD: usize = 2;

/// One attempt of a job, as handed to the handler.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    /// `tenant \t type \t queue`, which the scripts put in this job's events.
    pub meta: String,
    /// The payload as JSON text.
    pub payload: String,
    /// 1-based number of this attempt.
    pub attempt: u32,
    /// This run's fencing token (see [`crate::jobs::JobContext::run`]).
    pub token: u64,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
    /// Seconds its record is kept once it succeeds (`None`: the deployment's).
    pub retention_secs: Option<u64>,
    /// Fires when cancellation is requested, or the run's lease is lost.
    pub cancel: Cancellation,
}

/// How the backend runs.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub worker: WorkerInfo,
    /// Lease per running job; renewed every third of it.
    pub lease: Duration,
    /// Jobs run at once (the apalis concurrency limit).
    pub concurrency: usize,
    /// Most jobs one CLAIM takes.
    pub claim_batch: usize,
    /// Outcomes are flushed when this many are pending…
    pub ack_batch: usize,
    /// Caps on one tenant's running jobs, enforced by CLAIM.
    pub caps: RunningCaps,
    /// …or when the oldest has waited this long.
    pub ack_delay: Duration,
    pub store: StoreConfig,
}

/// One run of a job: its id and fencing token.
type RunKey = (String, u64);

/// Caps on the jobs of one tenant running at once, across every worker.
#[derive(Debug, Clone, Default)]
pub struct RunningCaps {
    /// On all queues together; 0 = none.
    pub tenant: u32,
    /// Per queue, as CLAIM reads them: `queue=n,queue=n` ('' = none).
    pub per_queue: String,
}

impl RunningCaps {
    pub fn new(tenant: u32, per_queue: &[(String, u32)]) -> Self {
        let per_queue = per_queue.iter().map(|(queue, cap)| format!("{queue}={cap}")).collect::<Vec<_>>().join(",");
        Self { tenant, per_queue }
    }
}

/// A run this process holds a lease on, until its outcome is flushed, it is
/// released, or its lease is lost.
#[derive(Debug, Clone)]
struct Lease {
    meta: String,
    queue: String,
    cancel: Cancellation,
    /// When the last renewal that Redis confirmed was sent (the claim, at first):
    /// the lease is good until at least one lease after it.
    renewed: Instant,
    /// The claim that took it (this process's count of claims).
    claim: u64,
}

/// A held run, as RELEASE takes it.
struct Held {
    id: String,
    meta: String,
    queue: String,
    token: u64,
}

impl Held {
    fn new((id, token): &RunKey, lease: &Lease) -> Self {
        Self { id: id.clone(), meta: lease.meta.clone(), queue: lease.queue.clone(), token: *token }
    }
}

/// The outcome of one run, on its way to the ACK script.
#[derive(Debug, Clone)]
struct Outcome {
    key: RunKey,
    meta: String,
    queue: String,
    kind: OutcomeKind,
    retry_delay: Duration,
    /// On success, how long the record is kept (`None`: the deployment's).
    retention_secs: Option<u64>,
    /// Result JSON on success, error text otherwise.
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutcomeKind {
    Succeeded,
    Retry,
    Fail,
}

impl OutcomeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "ok",
            Self::Retry => "retry",
            Self::Fail => "fail",
        }
    }
}

enum AckMsg {
    Done(Outcome),
    /// Flush everything, then stop.
    Close(oneshot::Sender<()>),
}

/// State shared by the backend, its acker and the [`BackendHandle`].
struct Inner {
    settings: BackendSettings,
    keys: Keys,
    conn: ConnectionManager,
    /// Dedicated to XREAD BLOCK: a blocking command would stall a multiplexed pipe.
    blocking: ConnectionManager,
    leases: Mutex<HashMap<RunKey, Lease>>,
    /// Claims sent whose reply never came: the next heartbeat hands their jobs back.
    lost_claims: Mutex<Vec<u64>>,
    /// Jobs handed to apalis whose handler has not finished.
    running: AtomicUsize,
    job_time: fetch::JobTime,
    stop: watch::Sender<bool>,
}

impl Inner {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, Lease>> {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lost_claims(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.lost_claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn queue_args(&self) -> &[String] {
        &self.settings.worker.queues
    }

    /// Hands jobs back to their queues without counting the attempt; retried
    /// while Redis is away, for at most `patience`.
    async fn release(&self, jobs: &[Held], patience: Duration) -> usize {
        if jobs.is_empty() {
            return 0;
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut call = scripts::RELEASE.key(self.keys.events());
            call.arg(self.keys.tag())
                .arg(self.settings.store.events_maxlen)
                .arg(self.settings.store.failed_ttl.as_millis() as u64);
            for job in jobs {
                call.arg(&job.id).arg(&job.meta).arg(&job.queue).arg(job.token);
            }
            match call.invoke_async::<usize>(&mut self.conn.clone()).await {
                Ok(released) => {
                    let mut leases = self.leases();
                    for job in jobs {
                        leases.remove(&(job.id.clone(), job.token));
                    }
                    return released;
                }
                Err(err) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %StoreError::from(err), "cannot hand jobs back yet, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => {
                    tracing::error!(error = %err, jobs = jobs.len(), "gave up handing jobs back; their leases will expire and the reaper will requeue them");
                    return 0;
                }
            }
        }
    }
}

/// Controls a backend from outside the apalis Worker: stop fetching, and
/// finish (flush outcomes, hand back whatever is still held).
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
}

impl BackendHandle {
    /// Stops claiming: an idle wait ends at once.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Flushes pending outcomes, then hands back every job still held (jobs
    /// whose handler was abandoned when the shutdown grace ran out). Returns
    /// the number handed back.
    pub async fn finish(&self, patience: Duration) -> usize {
        self.stop();
        let (tx, rx) = oneshot::channel();
        if self.ack_tx.send(AckMsg::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(patience, rx).await;
        }
        let held: Vec<Held> = self.inner.leases().iter().map(|(key, lease)| Held::new(key, lease)).collect();
        self.inner.release(&held, patience).await
    }
}

/// The apalis backend. Build one per worker with [`RedisBackend::new`].
pub struct RedisBackend {
    inner: Arc<Inner>,
    buffer: VecDeque<ClaimedJob>,
    /// Claims in flight: the one that waits for jobs when the buffer runs dry,
    /// and claims ahead (see [`RedisBackend::claim_ahead`]).
    fetches: FuturesUnordered<BoxFuture<'static, fetch::Batch>>,
    /// The last claim was full: the queue probably holds more.
    backlog: bool,
    /// The last claim drained the queues: the next fetch starts by waiting here.
    wait: Option<fetch::Wait>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    ack_rx: Option<mpsc::UnboundedReceiver<AckMsg>>,
    closing: Option<BoxFuture<'static, ()>>,
}

impl RedisBackend {
    /// `conn` serves scripts; `blocking` is used only for the idle wait.
    pub fn new(
        conn: ConnectionManager,
        blocking: ConnectionManager,
        settings: BackendSettings,
    ) -> (Self, BackendHandle) {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            keys: Keys::new(&settings.store.prefix),
            settings,
            conn,
            blocking,
            leases: Mutex::new(HashMap::new()),
            lost_claims: Mutex::default(),
            running: AtomicUsize::new(0),
            job_time: fetch::JobTime::new(),
            stop: watch::Sender::new(false),
        });
        let handle = BackendHandle { inner: inner.clone(), ack_tx: ack_tx.clone() };
        let backend = Self {
            inner,
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            backlog: false,
            wait: None,
            ack_tx,
            ack_rx: Some(ack_rx),
            closing: None,
        };
        (backend, handle)
    }
}

impl RedisBackend {
    /// While the queue has a backlog and jobs are short, keeps up to
    /// [`CLAIMS_AHEAD`] claims in flight, so Redis works on the next batches
    /// while this one runs. A claimed-ahead job waits for a free slot: about
    /// one job's run time, which [`fetch::JobTime`] keeps to milliseconds.
    fn claim_ahead(&mut self, cx: &mut Context<'_>) {
        if !self.backlog || !self.inner.job_time.short() || self.closing.is_some() {
            return;
        }
        while self.fetches.len() < CLAIMS_AHEAD && self.buffer.len() < self.inner.settings.claim_batch {
            self.fetches.push(Box::pin(fetch::next_batch(self.inner.clone(), true, None)));
        }
        // Sends the new claims; a reply that is already here lands in the buffer.
        while let Poll::Ready(Some(batch)) = self.fetches.poll_next_unpin(cx) {
            self.take(batch);
        }
    }

    /// Moves a claimed batch into the buffer.
    fn take(&mut self, batch: fetch::Batch) {
        self.backlog = batch.full;
        self.wait = batch.wait;
        self.buffer.extend(batch.jobs);
    }
}

impl Backend for RedisBackend {
    type Task = Task<ClaimedJob>;
    type Error = StoreError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), StoreError>> {
        // The first poll runs inside the worker's runtime: start the acker there.
        if let Some(rx) = self.ack_rx.take() {
            tokio::spawn(acker::run(self.inner.clone(), rx));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, StoreError>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                self.inner.running.fetch_add(1, Ordering::Relaxed);
                let (id, attempt, max_attempts) = (job.id.clone(), job.attempt, job.max_attempts);
                let task = TaskBuilder::new(job)
                    .task_id(TaskId::from_string(id))
                    .attempt(attempt as usize)
                    .max_attempts(max_attempts as usize)
                    .build();
                self.claim_ahead(cx);
                return Poll::Ready(Some(Ok(task)));
            }
            if self.closing.is_some() {
                return Poll::Pending;
            }
            if self.fetches.is_empty() {
                self.fetches.push(Box::pin(fetch::next_batch(self.inner.clone(), false, self.wait.take())));
            }
            match self.fetches.poll_next_unpin(cx) {
                Poll::Ready(Some(batch)) => {
                    if batch.jobs.is_empty() && *self.inner.stop.borrow() {
                        // Only a stop ends a waiting fetch empty-handed; apalis stops polling us next.
                        return Poll::Pending;
                    }
                    self.take(batch);
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), StoreError>> {
        let closing = self.closing.get_or_insert_with(|| {
            self.inner.stop.send_replace(true);
            let inner = self.inner.clone();
            let mut pending = std::mem::take(&mut self.fetches);
            let buffered: Vec<ClaimedJob> = self.buffer.drain(..).collect();
            let ack_tx = self.ack_tx.clone();
            Box::pin(async move {
                let mut unstarted = buffered;
                while let Some(batch) = pending.next().await {
                    unstarted.extend(batch.jobs);
                }
                let jobs: Vec<Held> = unstarted
                    .into_iter()
                    .map(|j| Held { id: j.id, meta: j.meta, queue: j.queue, token: j.token })
                    .collect();
                let released = inner.release(&jobs, Duration::from_secs(5)).await;
                if released > 0 {
                    tracing::info!(released, "handed unstarted jobs back to their queues");
                }
                let (tx, rx) = oneshot::channel();
                if ack_tx.send(AckMsg::Close(tx)).is_ok() {
                    let _ = rx.await;
                }
            })
        });
        Pin::new(closing).poll(cx).map(Ok)
    }
}

impl BackendConfig for RedisBackend {
    type Args = ClaimedJob;
    type Id = ();
    type Kind = Ephemeral;
    type Config = BackendSettings;
    type Layer = AckLayer;

    fn config(&self) -> &BackendSettings {
        &self.inner.settings
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> AckLayer {
        AckLayer::new(self.ack_tx.clone(), self.inner.clone())
    }
}
