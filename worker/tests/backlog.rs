//! Volume: a 100,000-job backlog drains, and the Redis round trips per job stay
//! within budget (enqueue: 1 per request; worker: ≤ 2 per job, amortised).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::{System, eventually};

async fn submit_batches(system: &System, batches: usize, per_batch: usize) -> Vec<String> {
    let body = json!({"jobs": vec![json!({"type": "noop"}); per_batch]});
    let mut ids = Vec::with_capacity(batches * per_batch);
    for chunk in (0..batches).collect::<Vec<_>>().chunks(4) {
        let requests = chunk.iter().map(|_| system.post("/v1/jobs/batch", &body, &[]));
        for (status, reply, _) in futures::future::join_all(requests).await {
            assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{reply}");
            ids.extend(reply["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()));
        }
    }
    ids
}

async fn queue_totals(system: &System) -> (u64, u64) {
    let (_, body) = system.get("/v1/queues").await;
    body["queues"].as_array().unwrap().iter().fold((0, 0), |(waiting, failed), q| {
        let n = |f: &str| q[f].as_u64().unwrap();
        (waiting + n("queued") + n("scheduled") + n("running") + n("retrying"), failed + n("failed"))
    })
}

async fn count_status(system: &System, ids: &[String], status: &str) -> usize {
    let mut conn = system.redis_conn().await;
    let keys = shared::keys::Keys::new(&system.prefix);
    let mut matching = 0;
    for chunk in ids.chunks(5_000) {
        let states: Vec<Option<String>> =
            redis::cmd("HMGET").arg(keys.state()).arg(chunk).query_async(&mut conn).await.unwrap();
        let prefix = format!("{status}\t");
        matching += states.iter().filter(|s| s.as_deref().is_some_and(|s| s.starts_with(&prefix))).count();
    }
    matching
}

#[tokio::test]
async fn a_backlog_of_100_000_jobs_enqueued_without_workers_drains_completely() {
    let system = System::start().await;
    let ids = submit_batches(&system, 100, 1_000).await;
    assert_eq!(ids.len(), 100_000);
    assert_eq!(queue_totals(&system).await, (100_000, 0));

    let workers = [system.spawn_worker_with(|c| c.concurrency = 50), system.spawn_worker_with(|c| c.concurrency = 50)];
    eventually(Duration::from_secs(240), "the backlog to drain", || async {
        (queue_totals(&system).await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(count_status(&system, &ids, "succeeded").await, 100_000);
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

async fn reset_stats(system: &System) {
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut system.redis_conn().await).await.unwrap();
}

fn calls(stats: &HashMap<String, u64>, command: &str) -> u64 {
    stats.get(command).copied().unwrap_or(0)
}

#[tokio::test]
async fn redis_round_trips_per_job_stay_within_budget() {
    let system = System::start().await;

    // Enqueue: one script call per request, single or batch.
    reset_stats(&system).await;
    submit_batches(&system, 5, 1_000).await;
    for _ in 0..20 {
        system.submit(json!({"type": "noop"})).await;
    }
    let stats = system.command_calls().await;
    assert_eq!(calls(&stats, "evalsha"), 25, "{stats:?}");
    let enqueue_commands: u64 =
        stats.iter().filter(|(c, _)| !c.starts_with("config") && *c != "info").map(|(_, n)| n).sum();

    // Processing: claims and acks are batched.
    let jobs = 5_020u64;
    reset_stats(&system).await;
    let worker = system.spawn_worker_with(|c| c.concurrency = 50);
    eventually(Duration::from_secs(120), "every job to succeed", || async {
        (queue_totals(&system).await == (0, 0)).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
    let stats = system.command_calls().await;
    let round_trips = calls(&stats, "evalsha") + calls(&stats, "xread");
    let per_job = round_trips as f64 / jobs as f64;
    // Everything the worker ran, inside scripts included (the test's own polling excluded).
    let polling =
        ["info", "config|resetstat", "smembers", "llen", "zcard", "zrange", "mget", "get", "hget", "set", "del"];
    let worker_commands: u64 = stats.iter().filter(|(c, _)| !polling.contains(&c.as_str())).map(|(_, n)| n).sum();
    eprintln!(
        "round trips per job: enqueue {:.4} (batched) / 1 (single); worker {per_job:.4}; \
         commands per job incl. scripts: enqueue {:.2}, worker {:.2}",
        5.0 / 5_000.0,
        enqueue_commands as f64 / jobs as f64,
        worker_commands as f64 / jobs as f64,
    );
    assert!(per_job <= 2.0, "worker round trips per job {per_job}: {stats:?}");
}

#[tokio::test]
async fn twenty_thousand_jobs_falling_due_at_once_all_run() {
    let system = System::start().await;
    let body = json!({"jobs": vec![json!({"type": "noop", "delay_ms": 500}); 1_000]});
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, reply, _) = system.post("/v1/jobs/batch", &body, &[]).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
        ids.extend(reply["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()));
    }
    // Start the worker only once every job is due: promotion must cope with all of them at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let worker = system.spawn_worker_with(|c| c.concurrency = 50);
    eventually(Duration::from_secs(120), "the due jobs to drain", || async {
        (queue_totals(&system).await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(count_status(&system, &ids, "succeeded").await, 20_000);
    worker.shutdown().await.unwrap();
}
