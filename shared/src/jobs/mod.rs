//! Job types: what a job of each type carries, how it is validated, and what a
//! worker does with it.
//!
//! A type is a payload struct deriving `Deserialize` and `garde::Validate`, and
//! an `impl JobType` naming it and giving its handler; a [`Registry`] holds the
//! types a deployment knows (the shipped ones, and any of its own). What
//! handlers share (a mailer, a database pool, an HTTP client) is given to the
//! worker as [`Services`] and read by type: `ctx.get::<PgPool>()?`. A type
//! declares what it needs ([`JobType::needs`]), so a worker missing it stops at
//! start-up, not at the first job.

mod cancel;
mod demo;
mod email;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

pub use cancel::{CancelReason, Cancellation};
pub use demo::{Fail, Noop, Sleep};
pub use email::{EmailSend, Mailer, MailerConfig};

use crate::backoff::Backoff;

/// How a failed attempt should be treated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (after backoff), if any are left.
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time: the job ends `failed` now.
    #[error("{0}")]
    Permanent(String),
}

/// Defaults a job type gives its jobs; a request may override attempts and timeout.
#[derive(Debug, Clone)]
pub struct JobDefaults {
    pub queue: &'static str,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
}

impl Default for JobDefaults {
    /// Queue `default`, 5 attempts, 5 min timeout, backoff base 1 s cap 10 min.
    fn default() -> Self {
        Self { queue: "default", max_attempts: 5, timeout: Duration::from_secs(300), backoff: Backoff::default() }
    }
}

/// What a running job can see of its surroundings.
#[derive(Clone)]
pub struct JobContext {
    pub id: String,
    /// The tenant that submitted the job.
    pub tenant: String,
    /// 1-based; attempts that never reached a worker do not count.
    pub attempt: u32,
    pub max_attempts: u32,
    /// This run's fencing token: the job's claims so far, this one included. It
    /// only grows (a retry does not reset it), so `(id, run)` names one run for
    /// good: a handler with side effects can key them on it.
    pub run: u64,
    /// Set when a client cancels the job or this worker loses the run's lease
    /// (seen within a heartbeat, a third of the lease).
    pub cancel: Cancellation,
    pub services: Arc<Services>,
}

impl JobContext {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel.reason()
    }

    /// Resolves once the run is cancelled: `select!` on it next to the work.
    pub async fn cancelled(&self) -> CancelReason {
        self.cancel.cancelled().await
    }

    /// The service of type `T` the worker was given. A type that declares `T`
    /// in [`JobType::needs`] always finds it (the worker checks at start-up);
    /// otherwise a missing one fails the attempt for good, naming the type.
    pub fn get<T: Send + Sync + 'static>(&self) -> Result<&T, JobError> {
        self.services
            .get::<T>()
            .ok_or_else(|| JobError::Permanent(format!("this worker was not given a `{}`", std::any::type_name::<T>())))
    }
}

/// Values that handlers share within a worker process (clients, pools, caches),
/// one of each type, found by type.
#[derive(Clone, Default)]
pub struct Services {
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`, replacing any earlier value of its type.
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.by_type.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.by_type.get(&TypeId::of::<T>()).and_then(|value| value.downcast_ref::<T>())
    }

    fn contains(&self, id: TypeId) -> bool {
        self.by_type.contains_key(&id)
    }
}

/// The services a job type needs, as [`JobType::needs`] declares them.
#[derive(Debug, Default)]
pub struct Needs {
    types: Vec<(TypeId, &'static str)>,
}

impl Needs {
    /// The handler reads a `T` with [`JobContext::get`].
    pub fn service<T: Send + Sync + 'static>(&mut self) -> &mut Self {
        self.types.push((TypeId::of::<T>(), std::any::type_name::<T>()));
        self
    }
}

/// A worker was not given a service one of its job types needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingServices {
    /// (job type, service type) pairs.
    pub missing: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Display for MissingServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (kind, service)) in self.missing.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}job type `{kind}` needs a `{service}`, which this worker was not given")?;
        }
        Ok(())
    }
}

impl std::error::Error for MissingServices {}

/// A kind of job. The payload's `ToSchema` is what `/openapi.json` publishes
/// for the type; give it the bounds its `garde` rules check.
pub trait JobType: DeserializeOwned + garde::Validate<Context = ()> + utoipa::ToSchema + Send + 'static {
    /// The `type` clients name in requests.
    const NAME: &'static str;

    fn defaults() -> JobDefaults {
        JobDefaults::default()
    }

    /// The services the handler reads from its context; a worker that lacks one
    /// refuses to start.
    fn needs(_needs: &mut Needs) {}

    /// Does the work. `Ok` carries the result stored on the record.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<serde_json::Value, JobError>> + Send;
}

/// A payload that failed validation, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    /// Dotted path of the field, e.g. `payload.to[1]`.
    pub field: String,
    pub message: String,
}

trait ErasedJob: Send + Sync {
    fn defaults(&self) -> JobDefaults;
    fn payload_schema(&self) -> serde_json::Value;
    fn needs(&self) -> Needs;
    fn validate(&self, payload: &serde_json::Value) -> Result<(), PayloadError>;
    fn run(&self, payload: &str, ctx: JobContext) -> BoxFuture<'static, Result<serde_json::Value, JobError>>;
}

struct Erased<T>(std::marker::PhantomData<fn() -> T>);

fn decode<T: DeserializeOwned>(payload: &serde_json::Value) -> Result<T, PayloadError> {
    serde_path_to_error::deserialize(payload).map_err(|err| {
        let path = err.path().to_string();
        PayloadError {
            field: if path == "." { "payload".into() } else { format!("payload.{path}") },
            message: err.into_inner().to_string(),
        }
    })
}

impl<T: JobType> ErasedJob for Erased<T> {
    fn defaults(&self) -> JobDefaults {
        T::defaults()
    }

    fn payload_schema(&self) -> serde_json::Value {
        serde_json::to_value(<T as utoipa::PartialSchema>::schema()).unwrap_or_default()
    }

    fn needs(&self) -> Needs {
        let mut needs = Needs::default();
        T::needs(&mut needs);
        needs
    }

    fn validate(&self, payload: &serde_json::Value) -> Result<(), PayloadError> {
        let job: T = decode(payload)?;
        job.validate().map_err(|report| {
            let (path, error) =
                report.iter().next().map_or((String::new(), String::new()), |(p, e)| (p.to_string(), e.to_string()));
            PayloadError {
                field: if path.is_empty() { "payload".into() } else { format!("payload.{path}") },
                message: error,
            }
        })
    }

    fn run(&self, payload: &str, ctx: JobContext) -> BoxFuture<'static, Result<serde_json::Value, JobError>> {
        match serde_json::from_str::<T>(payload) {
            Ok(job) => Box::pin(job.run(ctx)),
            Err(err) => {
                let message = format!("stored payload does not decode as {}: {err}", T::NAME);
                Box::pin(async move { Err(JobError::Permanent(message)) })
            }
        }
    }
}

/// The job types a process knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    types: HashMap<&'static str, Arc<dyn ErasedJob>>,
}

impl Registry {
    /// The shipped types: `email.send`, plus `noop`, `sleep` and `fail` when `demo` is on.
    pub fn standard(demo: bool) -> Self {
        let registry = Self::default().register::<EmailSend>();
        if demo { registry.register::<Noop>().register::<Sleep>().register::<Fail>() } else { registry }
    }

    pub fn register<T: JobType>(mut self) -> Self {
        self.types.insert(T::NAME, Arc::new(Erased::<T>(std::marker::PhantomData)));
        self
    }

    /// The names of the types it knows, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.types.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Each type's payload schema (JSON Schema, as OpenAPI 3.1 has it), by name.
    pub fn payload_schemas(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.names().into_iter().map(|name| (name, self.types[name].payload_schema())).collect()
    }

    /// Checks that `services` holds everything the types need.
    pub fn check(&self, services: &Services) -> Result<(), MissingServices> {
        let mut missing = Vec::new();
        for name in self.names() {
            for (id, service) in self.types[name].needs().types {
                if !services.contains(id) {
                    missing.push((name, service));
                }
            }
        }
        if missing.is_empty() { Ok(()) } else { Err(MissingServices { missing }) }
    }

    pub fn defaults(&self, name: &str) -> Option<JobDefaults> {
        self.types.get(name).map(|t| t.defaults())
    }

    /// Checks a payload against its type's schema. `None` when the type is unknown.
    pub fn validate(&self, name: &str, payload: &serde_json::Value) -> Option<Result<(), PayloadError>> {
        self.types.get(name).map(|t| t.validate(payload))
    }

    /// Runs one attempt of a job.
    pub fn run(
        &self,
        name: &str,
        payload: &str,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<serde_json::Value, JobError>> {
        match self.types.get(name) {
            Some(job) => job.run(payload, ctx),
            None => {
                let message = format!("this worker does not know job type `{name}`");
                Box::pin(async move { Err(JobError::Permanent(message)) })
            }
        }
    }
}
