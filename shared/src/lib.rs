//! `shared`: the durable contract between the API and the workers.
//!
//! # Layout
//! - [`keys`] — every Redis key, documented once.
//! - [`scripts`] — the Lua scripts; every state change is exactly one of them.
//! - [`model`] — the job record and its statuses; [`events`] — status events.
//! - [`store`] — the API's operations (enqueue, read, list, cancel, retry, stats).
//! - [`backend`] — our apalis backend: claim, ack, leases, reaping.
//! - [`jobs`] — the job types, their payload schemas and handlers.
//! - [`migrate`] — Redis schema migrations from `migrations/`.
//! - [`config`], [`telemetry`], [`shutdown`] — what both binaries share at start-up.

pub mod backend;
pub mod backoff;
pub mod config;
pub mod error;
pub mod events;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod model;
pub mod scripts;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
