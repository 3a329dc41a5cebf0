//! Worker semantics: scheduling, retries with backoff, attempt limits, permanent
//! failures, timeouts, panics, cancellation of running jobs, idle pickup.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::System;

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

fn statuses(history: &[Value]) -> Vec<String> {
    history.iter().map(|e| e["status"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn scheduled_jobs_run_on_time() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let run_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let by_time = system.submit(json!({"type": "noop", "run_at": run_at.to_rfc3339()})).await;
    let by_delay = system.submit(json!({"type": "noop", "delay_ms": 1200})).await;
    let record = system.job(&by_time).await;
    assert_eq!(record["status"], "scheduled");
    assert_eq!(at(&record["scheduled_at"]).timestamp_millis(), run_at.timestamp_millis());

    let delayed = system.job(&by_delay).await;
    let requested = [(by_time, run_at), (by_delay, at(&delayed["created_at"]) + chrono::Duration::milliseconds(1200))];
    for (id, due) in requested {
        let record = system.wait_for_status(&id, "succeeded", Duration::from_secs(10)).await;
        assert_eq!(
            at(&record["scheduled_at"]).timestamp_millis(),
            due.timestamp_millis(),
            "the record keeps its due time"
        );
        let lateness = at(&record["started_at"]) - due;
        assert!(lateness >= chrono::Duration::zero(), "started {lateness} early");
        assert!(lateness <= chrono::Duration::seconds(1), "started {lateness} late");
    }
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retries_stop_exactly_at_max_attempts() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let default_budget = system
        .submit(json!({"type": "fail", "payload": {"times": 100}, "backoff_base_ms": 10, "backoff_cap_ms": 20}))
        .await;
    let three = system
        .submit(json!({"type": "fail", "payload": {"times": 100}, "max_attempts": 3, "backoff_base_ms": 10, "backoff_cap_ms": 20}))
        .await;
    let recovers = system
        .submit(json!({"type": "fail", "payload": {"times": 2}, "max_attempts": 3, "backoff_base_ms": 10, "backoff_cap_ms": 20}))
        .await;

    let record = system.wait_for_status(&default_budget, "failed", Duration::from_secs(15)).await;
    assert_eq!(record["attempts"], 5, "the default budget is 5 attempts");
    let runs = statuses(&system.history(&default_budget).await).iter().filter(|s| *s == "running").count();
    assert_eq!(runs, 5);

    let record = system.wait_for_status(&three, "failed", Duration::from_secs(15)).await;
    assert_eq!(record["attempts"], 3);
    assert!(record["last_error"].as_str().unwrap().contains("failing on purpose"));
    assert_eq!(
        statuses(&system.history(&three).await),
        ["queued", "running", "retrying", "queued", "running", "retrying", "queued", "running", "failed"]
    );

    let record = system.wait_for_status(&recovers, "succeeded", Duration::from_secs(15)).await;
    assert_eq!((record["attempts"].as_u64(), record["result"]["succeeded_on_attempt"].as_u64()), (Some(3), Some(3)));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_delays_stay_within_the_backoff_bounds() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    // base 300 ms, cap 600 ms: the wait after attempt 1 is in [0, 300] ms, after attempt 2 in [0, 600] ms.
    let body = json!({"type": "fail", "payload": {"times": 2}, "backoff_base_ms": 300, "backoff_cap_ms": 600});
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": vec![body; 12]}), &[]).await;
    let ids: Vec<String> = batch["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();

    let mut waits = Vec::new();
    for id in &ids {
        system.wait_for_status(id, "succeeded", Duration::from_secs(15)).await;
        let history = system.history(id).await;
        for pair in history.windows(2) {
            if pair[0]["status"] == "retrying" {
                let failed_attempt = pair[0]["attempt"].as_u64().unwrap();
                let wait = (at(&pair[1]["at"]) - at(&pair[0]["at"])).num_milliseconds();
                let ceiling = if failed_attempt == 1 { 300 } else { 600 };
                // The idle worker promotes due jobs within its claim loop; allow 150 ms for that.
                assert!((0..=ceiling + 150).contains(&wait), "waited {wait} ms after attempt {failed_attempt}");
                waits.push(wait);
            }
        }
    }
    assert_eq!(waits.len(), 24);
    // Full jitter spreads retries: they neither all fire at once nor all wait the maximum.
    assert!(waits.iter().any(|w| *w >= 100), "some retries waited: {waits:?}");
    assert!(waits.iter().any(|w| *w < 250), "some retries came early: {waits:?}");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system.submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    let record = system.wait_for_status(&id, "failed", Duration::from_secs(10)).await;
    assert_eq!(record["attempts"], 1);
    assert_eq!(statuses(&system.history(&id).await), ["queued", "running", "failed"]);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_timeout_counts_as_a_failed_attempt() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system
        .submit(json!({"type": "sleep", "payload": {"ms": 10_000}, "timeout_ms": 200, "max_attempts": 2, "backoff_base_ms": 10, "backoff_cap_ms": 10}))
        .await;
    let record = system.wait_for_status(&id, "failed", Duration::from_secs(10)).await;
    assert_eq!(record["attempts"], 2);
    assert_eq!(record["last_error"], "timed out after 200 ms");
    let started = at(&record["started_at"]);
    let finished = at(&record["finished_at"]);
    assert!(finished - started < chrono::Duration::seconds(2), "the handler was stopped at its timeout");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panic_counts_as_a_failed_attempt_and_the_worker_carries_on() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system
        .submit(json!({"type": "sleep", "payload": {"ms": 1, "panic": true}, "max_attempts": 2, "backoff_base_ms": 10, "backoff_cap_ms": 10}))
        .await;
    let record = system.wait_for_status(&id, "failed", Duration::from_secs(10)).await;
    assert_eq!(record["attempts"], 2);
    let error = record["last_error"].as_str().unwrap();
    assert!(error.starts_with("panicked") && error.contains("asked to panic"), "{error}");
    let after = system.submit(json!({"type": "noop"})).await;
    system.wait_for_status(&after, "succeeded", Duration::from_secs(10)).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_flags_it_and_it_is_not_retried() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 20_000}, "max_attempts": 3})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    let (status, record, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!((record["status"].as_str(), record["cancel_requested"].as_bool()), (Some("running"), Some(true)));
    // The handler sees the flag at its next heartbeat and stops.
    let record = system.wait_for_status(&id, "cancelled", Duration::from_secs(10)).await;
    assert_eq!(record["attempts"], 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_worker_starts_a_new_job_within_50_ms() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    // Let the worker settle into its idle wait.
    let warmup = system.submit(json!({"type": "noop"})).await;
    system.wait_for_status(&warmup, "succeeded", Duration::from_secs(10)).await;

    let mut pickups = Vec::new();
    for round in 0..40u64 {
        // Vary the idle gap so submissions land at every phase of the worker's wait.
        tokio::time::sleep(Duration::from_millis(10 + (round * 37) % 200)).await;
        let id = system.submit(json!({"type": "noop"})).await;
        let record = system.wait_for_status(&id, "succeeded", Duration::from_secs(10)).await;
        // Both times come from the Redis clock.
        pickups.push((at(&record["started_at"]) - at(&record["created_at"])).num_milliseconds());
    }
    pickups.sort_unstable();
    let p99 = pickups[(pickups.len() * 99).div_ceil(100) - 1];
    assert!(p99 < 50, "idle pickup p99 {p99} ms: {pickups:?}");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_worker_claims_once_per_job_it_is_woken_for() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let warmup = system.submit(json!({"type": "noop"})).await;
    system.wait_for_status(&warmup, "succeeded", Duration::from_secs(10)).await;

    // Every claim pops the ready list once. A claim that drains the queue says
    // where to wait, so the worker waits next instead of claiming nothing.
    let before = system.command_calls().await.get("lpop").copied().unwrap_or(0);
    let jobs = 20;
    for _ in 0..jobs {
        let id = system.submit(json!({"type": "noop"})).await;
        system.wait_for_status(&id, "succeeded", Duration::from_secs(10)).await;
    }
    let claims = system.command_calls().await.get("lpop").copied().unwrap_or(0) - before;
    // A few more for the idle wait's one-second timeouts.
    assert!((jobs..=jobs + 4).contains(&claims), "{claims} claims for {jobs} jobs");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn succeeded_records_expire_and_failed_ones_are_kept_longer() {
    let system = System::start_with(|c| {
        c.retention.succeeded_ttl_secs = 1;
        c.retention.failed_ttl_secs = 3600;
    })
    .await;
    let worker = system.spawn_worker_with(|c| {
        c.retention.succeeded_ttl_secs = 1;
        c.retention.failed_ttl_secs = 3600;
    });
    let ok = system.submit(json!({"type": "noop"})).await;
    let bad = system.submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    system.wait_for_status(&ok, "succeeded", Duration::from_secs(10)).await;
    system.wait_for_status(&bad, "failed", Duration::from_secs(10)).await;

    // The reaper deletes the succeeded record once its retention has passed.
    support::eventually(Duration::from_secs(10), "the succeeded record to expire", || async {
        (system.get(&format!("/v1/jobs/{ok}")).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let record = system.job(&bad).await;
    assert_eq!(record["status"], "failed", "failed records are kept for FAILED_TTL_SECS");
    let mut conn = system.redis_conn().await;
    let keys = shared::keys::Keys::new(&system.prefix);
    for column in [keys.spec(), keys.state(), keys.result()] {
        let left: bool = redis::cmd("HEXISTS").arg(&column).arg(&ok).query_async(&mut conn).await.unwrap();
        assert!(!left, "{column} still holds the expired job");
    }
    // Listing drops the expired job from the index.
    let (_, list) = system.get("/v1/jobs").await;
    let listed: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [bad.as_str()]);
    let indexed: u64 = redis::cmd("ZCARD").arg(keys.tenant_jobs(support::TENANT)).query_async(&mut conn).await.unwrap();
    assert_eq!(indexed, 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_events_stream_is_trimmed_and_idempotency_keys_expire() {
    let system = System::start_with(|c| {
        c.retention.events_maxlen = 100;
        c.retention.idempotency_ttl_secs = 600;
    })
    .await;
    // Every single submission appends one stream entry.
    for n in 0..400 {
        let key = format!("k-{n}");
        let (status, _, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[("idempotency-key", &key)]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mut conn = system.redis_conn().await;
    let keys = shared::keys::Keys::new(&system.prefix);
    let length: u64 = redis::cmd("XLEN").arg(keys.events()).query_async(&mut conn).await.unwrap();
    // MAXLEN ~ trims whole stream nodes (100 entries each), so it may keep up to one node more.
    assert!(length <= 200, "the events stream holds {length} entries");
    let ttl: i64 =
        redis::cmd("TTL").arg(keys.idempotency(support::TENANT, "k-7")).query_async(&mut conn).await.unwrap();
    assert!((590..=600).contains(&ttl), "idempotency key ttl {ttl}");
}

#[tokio::test]
async fn a_worker_serves_only_its_queues() {
    let system = System::start().await;
    let reports_worker = system.spawn_worker_with(|c| c.queues = vec!["reports".into()]);
    let elsewhere = system.submit(json!({"type": "noop", "queue": "default"})).await;
    let mine = system.submit(json!({"type": "noop", "queue": "reports"})).await;
    system.wait_for_status(&mine, "succeeded", Duration::from_secs(10)).await;
    // One more round trip through the worker's claim loop, then the other job must still wait.
    let mine_again = system.submit(json!({"type": "noop", "queue": "reports"})).await;
    system.wait_for_status(&mine_again, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(system.job(&elsewhere).await["status"], "queued");

    let default_worker = system.spawn_worker_with(|c| c.queues = vec!["default".into()]);
    system.wait_for_status(&elsewhere, "succeeded", Duration::from_secs(10)).await;
    reports_worker.shutdown().await.unwrap();
    default_worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queues_failed_jobs_can_be_retried_in_bounded_batches() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let failing = |queue: &str| json!({"type": "fail", "queue": queue, "payload": {"times": 1, "permanent": true}});
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(system.submit(failing("imports")).await);
    }
    let elsewhere = system.submit(failing("exports")).await;
    for id in ids.iter().chain([&elsewhere]) {
        system.wait_for_status(id, "failed", Duration::from_secs(10)).await;
    }
    worker.shutdown().await.unwrap();

    let path = "/v1/queues/imports/retry-failed?limit=3";
    let (status, first, _) = system.post(path, &json!({}), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((first["retried"].as_u64(), first["more"].as_bool()), (Some(3), Some(true)));
    let (_, second, _) = system.post(path, &json!({}), &[]).await;
    assert_eq!((second["retried"].as_u64(), second["more"].as_bool()), (Some(2), Some(false)));
    let (_, third, _) = system.post(path, &json!({}), &[]).await;
    assert_eq!(third["retried"], 0);

    for id in &ids {
        let record = system.job(id).await;
        assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("queued"), Some(0)));
    }
    assert_eq!(system.job(&elsewhere).await["status"], "failed", "other queues are left alone");
    let (status, body, _) = system.post("/v1/queues/imports/retry-failed?limit=0", &json!({}), &[]).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")));
}

#[tokio::test]
async fn a_busy_worker_does_not_hoard_jobs_an_idle_one_could_run() {
    let system = System::start().await;
    let busy = system.spawn_worker_with(|c| c.concurrency = 2);
    let long = system.submit(json!({"type": "sleep", "payload": {"ms": 4000}})).await;
    system.wait_for_status(&long, "running", Duration::from_secs(10)).await;
    let idle = system.spawn_worker_with(|c| c.concurrency = 2);
    // Let the idle worker register before the jobs arrive.
    support::eventually(Duration::from_secs(5), "both workers registered", || async {
        let (_, body) = system.get_admin("/v1/queues").await;
        (body["workers"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;

    let submitted = std::time::Instant::now();
    let jobs = vec![json!({"type": "sleep", "payload": {"ms": 1000}}); 3];
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    for id in batch["ids"].as_array().unwrap() {
        system.wait_for_status(id.as_str().unwrap(), "succeeded", Duration::from_secs(10)).await;
    }
    // Three free slots (one on the busy worker, two on the idle one) run all three at
    // once; a hoarded job would have waited for the 4 s job to end.
    let took = submitted.elapsed();
    assert!(took < Duration::from_millis(2500), "three 1 s jobs took {took:?}");
    busy.shutdown().await.unwrap();
    idle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_serving_every_queue_takes_them_in_turn() {
    let system = System::start().await;
    for queue in ["alpha", "beta"] {
        let jobs = vec![json!({"type": "noop", "queue": queue}); 200];
        let (status, _, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // One slot, so each claim takes one job: a starving queue would show at once.
    let worker = system.spawn_worker_with(|c| c.concurrency = 1);
    let done = support::eventually(Duration::from_secs(10), "40 jobs done", || async {
        let (_, page) = system.get("/v1/jobs?status=succeeded&limit=500").await;
        let jobs = page["jobs"].as_array().unwrap().clone();
        (jobs.len() >= 40).then_some(jobs)
    })
    .await;
    worker.shutdown().await.unwrap();
    let from = |queue: &str| done.iter().filter(|job| job["queue"] == queue).count();
    assert!(from("alpha") >= 10 && from("beta") >= 10, "alpha {} beta {}", from("alpha"), from("beta"));
}
