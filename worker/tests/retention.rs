//! Retention keeps up with finishing at any rate: records go as they expire,
//! and Redis's memory comes back to where it was.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{System, eventually};

async fn used_memory(system: &System) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut system.redis_conn().await).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

async fn records(system: &System) -> u64 {
    let key = shared::keys::Keys::new(&system.prefix).state();
    redis::cmd("HLEN").arg(key).query_async(&mut system.redis_conn().await).await.unwrap()
}

#[tokio::test]
async fn a_100_000_job_drain_leaves_no_finished_record_3_s_after_the_last_job_ends() {
    let system = System::start_with(|config| {
        config.retention.succeeded_ttl_secs = 2;
        config.retention.events_maxlen = 100;
    })
    .await;
    let baseline = used_memory(&system).await;
    for _ in 0..100 {
        let (status, body, _) =
            system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 1000]}), &[]).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    }
    // The default lease (30 s): the reaper's own timer is no help here.
    let env = [("CONCURRENCY", "50"), ("LEASE_SECS", "30"), ("SUCCEEDED_TTL_SECS", "2"), ("EVENTS_MAXLEN", "100")];
    let _worker = system.spawn_worker_process(&env);
    let ended = eventually(Duration::from_secs(120), "every job succeeded", || async {
        let (_, body) = system.get("/v1/queues").await;
        let queues = body["queues"].as_array()?;
        let done: u64 = queues.iter().map(|q: &Value| q["succeeded"].as_u64().unwrap_or(0)).sum();
        let live: u64 =
            queues.iter().map(|q| q["queued"].as_u64().unwrap_or(0) + q["running"].as_u64().unwrap_or(0)).sum();
        // Swept records leave the counts too: done once nothing is live and nothing is left to run.
        (live == 0 && done < 100_000).then(Instant::now)
    })
    .await;
    tokio::time::sleep_until((ended + Duration::from_secs(3)).into()).await;
    assert_eq!(records(&system).await, 0, "finished records left 3 s after the last job ended");
    let used = used_memory(&system).await;
    assert!(used - baseline < 2 << 20, "Redis uses {} KiB more than before the jobs", (used - baseline) / 1024);
}

#[tokio::test]
async fn succeeded_records_past_the_cap_go_oldest_first_for_each_tenant_apart() {
    let system = System::start().await;
    let first = system.submit(json!({"type": "noop"})).await;
    let (status, body, _) =
        system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 499]}), &[]).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let last = system.submit(json!({"type": "noop"})).await;
    let other = support::client_for(&support::token("globex", "jobs:write jobs:read", Duration::from_secs(600)));
    let response = other
        .post(system.url("/v1/jobs/batch"))
        .json(&json!({"jobs": vec![json!({"type": "noop"}); 30]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);

    let worker = system.spawn_worker_with(|config| config.retention.succeeded_max_per_queue = 100);
    let counts = eventually(Duration::from_secs(30), "every job ran", || async {
        let (_, body) = system.get("/v1/queues").await;
        let queue = body["queues"].as_array()?.iter().find(|q| q["name"] == "default")?.clone();
        (queue["queued"] == 0 && queue["running"] == 0 && queue["succeeded"].as_u64()? <= 100).then_some(queue)
    })
    .await;
    worker.shutdown().await.unwrap();
    assert_eq!(counts["succeeded"], 100, "the tenant's count follows the deletions: {counts}");
    assert_eq!(records(&system).await, 130, "100 of acme's 501 records and all 30 of globex's");
    assert_eq!(system.get(&format!("/v1/jobs/{first}")).await.0, reqwest::StatusCode::NOT_FOUND, "the oldest went");
    assert_eq!(system.job(&last).await["status"], "succeeded", "the newest stays");
    let (_, listed) = system.get("/v1/jobs?limit=500").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 100, "the listing lost the deleted ones");
    let usage: Vec<u64> = redis::cmd("HMGET")
        .arg(shared::keys::Keys::new(&system.prefix).tenant_usage(support::TENANT))
        .arg("live")
        .arg("bytes")
        .query_async(&mut system.redis_conn().await)
        .await
        .unwrap();
    let spec_bytes: u64 = {
        let mut conn = system.redis_conn().await;
        let specs: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(shared::keys::Keys::new(&system.prefix).spec())
            .query_async(&mut conn)
            .await
            .unwrap();
        specs.values().filter(|spec| spec.starts_with(support::TENANT)).map(|spec| spec.len() as u64).sum()
    };
    assert_eq!(usage, [0, spec_bytes], "live and stored bytes kept exactly");
}
