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
