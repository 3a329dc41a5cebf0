//! Prometheus metrics: what a worker exposes on METRICS_ADDR.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{System, eventually, sample};

#[tokio::test]
async fn a_worker_counts_attempts_by_outcome_and_times_jobs() {
    let system = System::start().await;
    let port = shared::testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = system.spawn_worker_process(&[("METRICS_ADDR", &addr)]);
    for _ in 0..3 {
        system.submit(json!({"type": "noop"})).await;
    }
    let failing = system.submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    system.wait_for_status(&failing, "failed", Duration::from_secs(15)).await;

    let page = eventually(Duration::from_secs(10), "metrics counting every attempt", || async {
        let page = system.http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        let succeeded = sample(&page, r#"jobs_attempts_total{queue="default",type="noop",outcome="succeeded"}"#)?;
        (succeeded == 3.0).then_some(page)
    })
    .await;
    assert_eq!(sample(&page, r#"jobs_attempts_total{queue="default",type="fail",outcome="failed"}"#), Some(1.0));
    assert_eq!(sample(&page, "jobs_claimed_total"), Some(4.0), "{page}");
    assert_eq!(sample(&page, r#"job_duration_seconds_count{queue="default",type="noop"}"#), Some(3.0), "{page}");
}

#[tokio::test]
async fn a_worker_claims_ahead_only_while_its_jobs_are_short() {
    let system = System::start().await;
    let addr = format!("127.0.0.1:{}", shared::testkit::free_port());
    let _worker = system.spawn_worker_process(&[("METRICS_ADDR", &addr), ("CONCURRENCY", "2")]);
    let scrape = |wanted: f64| {
        let (system, addr) = (&system, &addr);
        eventually(Duration::from_secs(20), "every job claimed", move || async move {
            let page = system.http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
            (sample(&page, "jobs_claimed_total")? == wanted).then_some(page)
        })
    };

    // Jobs of 200 ms: a claimed-ahead one would wait for a slot, so none is.
    let long = vec![json!({"type": "sleep", "payload": {"ms": 200}}); 6];
    system.post("/v1/jobs/batch", &json!({"jobs": long}), &[]).await;
    let page = scrape(6.0).await;
    assert_eq!(sample(&page, "jobs_claimed_ahead_total"), None, "{page}");

    // A backlog of no-op jobs: once the average run time falls, claims go ahead.
    let short = vec![json!({"type": "noop"}); 1000];
    system.post("/v1/jobs/batch", &json!({"jobs": short}), &[]).await;
    let page = scrape(1006.0).await;
    let ahead = sample(&page, "jobs_claimed_ahead_total").unwrap_or(0.0);
    assert!(ahead >= 100.0, "{ahead} of 1,000 short jobs claimed ahead\n{page}");
}

#[tokio::test]
async fn the_api_exposes_request_counts_enqueues_and_queue_depths() {
    let system = System::start().await;
    system.submit(json!({"type": "noop"})).await;
    system.submit(json!({"type": "noop", "queue": "reports"})).await;
    system.post("/v1/jobs", &json!({"type": "teleport"}), &[]).await;
    let id = system.submit(json!({"type": "noop"})).await;
    system.job(&id).await;

    let page = system.admin.get(system.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&page, r#"jobs_enqueued_total{queue="default",type="noop"}"#), Some(2.0), "{page}");
    assert_eq!(sample(&page, r#"jobs_enqueued_total{queue="reports",type="noop"}"#), Some(1.0));
    assert_eq!(sample(&page, r#"http_requests_total{method="POST",path="/v1/jobs",status="202"}"#), Some(3.0));
    assert_eq!(sample(&page, r#"http_requests_total{method="POST",path="/v1/jobs",status="422"}"#), Some(1.0));
    // Requests are labelled by route, not by job id.
    assert_eq!(sample(&page, r#"http_requests_total{method="GET",path="/v1/jobs/{id}",status="200"}"#), Some(1.0));
    assert_eq!(sample(&page, r#"queue_jobs{queue="default",status="queued"}"#), Some(2.0));
    assert_eq!(sample(&page, r#"queue_jobs{queue="reports",status="queued"}"#), Some(1.0));
}
