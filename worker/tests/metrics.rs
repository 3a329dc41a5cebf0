//! Prometheus metrics: what a worker exposes on METRICS_ADDR.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{System, eventually};

/// The value of one sample line (`name{labels} value`) in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

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
