//! The Lua scripts: every state change is one of these, run atomically by EVALSHA.
//!
//! Each script is `lib.lua` (shared helpers) followed by its own body; the KEYS and
//! ARGV each one takes are listed at the top of its `.lua` file.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(include_str!("scripts/lib.lua"), "\n", include_str!(concat!("scripts/", $file))))
        })
    };
}

/// Creates jobs (single or batch) and claims the Idempotency-Key, if any.
pub static ENQUEUE: LazyLock<Script> = script!("enqueue.lua");
/// Promotes due jobs and leases a batch of ready jobs to a worker.
pub static CLAIM: LazyLock<Script> = script!("claim.lua");
/// Records a batch of attempt outcomes: succeeded, retrying or failed.
pub static ACK: LazyLock<Script> = script!("ack.lua");
/// Registers a worker and renews the leases of its running jobs.
pub static HEARTBEAT: LazyLock<Script> = script!("heartbeat.lua");
/// Takes back jobs whose lease expired and prunes expired index entries.
pub static REAP: LazyLock<Script> = script!("reap.lua");
/// Hands back jobs a stopping worker claimed but will not finish.
pub static RELEASE: LazyLock<Script> = script!("release.lua");
/// Cancels a waiting job, or flags a running one.
pub static CANCEL: LazyLock<Script> = script!("cancel.lua");
/// Queues a failed or cancelled job again with a fresh attempt budget.
pub static RETRY: LazyLock<Script> = script!("retry.lua");
/// Queues again the failed jobs of one tenant on one queue, a bounded number per call.
pub static RETRY_FAILED: LazyLock<Script> = script!("retry_failed.lua");
/// Reads job records with their histories (read-only).
pub static READ: LazyLock<Script> = script!("read.lua");

/// Loads every script into Redis's script cache, so the first calls after start-up
/// cost one round trip like every other (a call after a Redis restart reloads
/// its script by itself).
pub async fn preload(conn: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
    for script in [&ENQUEUE, &CLAIM, &ACK, &HEARTBEAT, &REAP, &RELEASE, &CANCEL, &RETRY, &RETRY_FAILED, &READ] {
        script.load_async(conn).await?;
    }
    Ok(())
}
