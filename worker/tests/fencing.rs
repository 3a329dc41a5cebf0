//! Fencing: a job's outcome is recorded only from the claim that holds it. Real
//! worker processes are paused (SIGSTOP) past their lease and resumed, so a
//! stale attempt and a live one of the same job exist at once.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::{System, eventually, sample, scrape};

/// How long the harness's workers take to reap a paused worker's job, at most.
const REAPED_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_paused_workers_late_outcome_never_lands_on_the_retried_run() {
    let system = System::start().await;
    let first = system.spawn_worker_process(&[]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 5000}, "max_attempts": 1})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    let _second = system.spawn_worker_process(&[]);

    first.pause();
    system.wait_for_status(&id, "failed", REAPED_WITHIN).await;
    let (status, body, _) = system.post(&format!("/v1/jobs/{id}/retry"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rerun = system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    assert_eq!(rerun["attempts"], 1, "the retried run is attempt 1 again");
    let rerun_started = Instant::now();
    first.resume();

    // The first run's sleep ends about two seconds after the resume; the rerun's five.
    system.wait_for_status(&id, "succeeded", Duration::from_secs(20)).await;
    let took = rerun_started.elapsed();
    assert!(
        took >= Duration::from_millis(4500),
        "recorded succeeded {took:?} after the rerun started, before the rerun could end: the paused worker's outcome landed"
    );
}

#[tokio::test]
async fn a_stale_attempt_ending_never_releases_the_live_attempts_lease() {
    let system = System::start().await;
    let runner = system.spawn_worker_process(&[("QUEUES", "q1"), ("CONCURRENCY", "2")]);
    let _reaper = system.spawn_worker_process(&[("QUEUES", "other")]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 6000}, "queue": "q1", "max_attempts": 5})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;

    runner.pause();
    system.wait_for_status(&id, "queued", REAPED_WITHIN).await;
    runner.resume();

    // The runner claims attempt 2 next to its own stale attempt 1. Attempt 1
    // ending must leave attempt 2's lease alone, so attempt 2 is the last.
    let record = system.wait_for_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(record["attempts"], 2, "{record}");
    let expired = system
        .history(&id)
        .await
        .iter()
        .filter(|e| e["error"].as_str().is_some_and(|e| e.contains("lease expired")))
        .count();
    assert_eq!(expired, 1, "one lease was lost, while the runner was paused");
}

#[tokio::test]
async fn a_lost_lease_cancels_the_handler_frees_its_slot_and_drops_its_outcome() {
    let system = System::start().await;
    let addr = format!("127.0.0.1:{}", shared::testkit::free_port());
    let runner = system.spawn_worker_process(&[("QUEUES", "q1"), ("CONCURRENCY", "1"), ("METRICS_ADDR", &addr)]);
    let _reaper = system.spawn_worker_process(&[("QUEUES", "other")]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 60_000}, "queue": "q1", "max_attempts": 3})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;

    runner.pause();
    system.wait_for_status(&id, "queued", REAPED_WITHIN).await;
    runner.resume();

    // The runner's one slot was held by the stale attempt: once it is cancelled,
    // the runner takes the job again at once, not after the 60 s sleep.
    eventually(Duration::from_secs(5), "attempt 2 running on the runner", || async {
        let record = system.job(&id).await;
        (record["status"] == "running" && record["attempts"] == 2).then_some(())
    })
    .await;
    let page = eventually(Duration::from_secs(5), "the dropped outcome counted", || async {
        let page = scrape(&addr).await?;
        (sample(&page, "jobs_outcomes_dropped_total")? == 1.0).then_some(page)
    })
    .await;
    assert!(page.contains("jobs_leases_lost_total"), "{page}");
}

#[tokio::test]
async fn a_handler_whose_lease_cannot_be_renewed_for_a_whole_lease_is_cancelled() {
    let system = System::start().await;
    let addr = format!("127.0.0.1:{}", shared::testkit::free_port());
    let _runner = system.spawn_worker_process(&[("CONCURRENCY", "1"), ("METRICS_ADDR", &addr)]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 60_000}, "max_attempts": 3})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;

    // Redis answers nothing for longer than the lease (2 s).
    system.redis.freeze();
    tokio::time::sleep(Duration::from_secs(3)).await;
    system.redis.thaw();

    let page = eventually(Duration::from_secs(5), "the cancelled attempt's outcome dropped", || async {
        let page = scrape(&addr).await?;
        (sample(&page, "jobs_outcomes_dropped_total")? == 1.0).then_some(page)
    })
    .await;
    assert_eq!(sample(&page, r#"jobs_leases_lost_total{reason="unrenewed"}"#), Some(1.0), "{page}");
    // Its lease lapses and the job runs again, on the slot the cancelled attempt freed.
    eventually(Duration::from_secs(15), "attempt 2 running", || async {
        let record = system.job(&id).await;
        (record["status"] == "running" && record["attempts"] == 2).then_some(())
    })
    .await;
}
