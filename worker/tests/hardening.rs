//! Safe defaults and small leaks closed: what an unauthenticated caller or a
//! careless operator could learn or grow.

mod support;

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{System, scrape};

#[tokio::test]
async fn readyz_says_ready_or_not_without_internal_error_text() {
    let mut system = System::start().await;
    system.redis.kill();
    let late = system.start_another_api().await;
    let response = reqwest::get(format!("{late}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    let port = system.redis.port().to_string();
    for secret in [port.as_str(), "127.0.0.1", "refused", "os error"] {
        assert!(!message.contains(secret), "readyz tells `{secret}`: {message}");
    }
}

#[tokio::test]
async fn a_long_or_odd_request_id_is_replaced_and_a_made_up_method_makes_no_series() {
    let system = System::start().await;
    let long = "a".repeat(10_000);
    let response = system.http.get(system.url("/healthz")).header("x-request-id", &long).send().await.unwrap();
    let echoed = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(echoed.len() <= 128 && echoed != long, "{} bytes echoed", echoed.len());
    let kept = system.http.get(system.url("/healthz")).header("x-request-id", "trace-42").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42");

    let odd = reqwest::Method::from_bytes(b"AAAA1").unwrap();
    system.http.request(odd, system.url("/healthz")).send().await.unwrap();
    let page = system.admin.get(system.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("AAAA1"), "the method made a series of its own");
    assert!(page.contains(r#"method="other""#), "{page}");
}

#[tokio::test]
async fn a_malformed_cursor_is_a_400_naming_it() {
    let system = System::start().await;
    for cursor in ["NaN.x", "inf.x", "nonsense"] {
        let (status, body) = system.get(&format!("/v1/jobs?cursor={cursor}")).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cursor")), "{cursor}: {body}");
    }
}

#[tokio::test]
async fn demo_types_are_off_unless_asked_for_and_sleep_is_short() {
    let system = System::start_with(|config| config.demo.demo_jobs = None).await;
    let (status, body, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_type")), "{body}");
    let with_demo = System::start().await;
    let (status, body, _) =
        with_demo.post("/v1/jobs", &json!({"type": "sleep", "payload": {"ms": 3_600_000}}), &[]).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("payload.ms")), "{body}");
}

#[test]
fn urls_with_passwords_never_appear_in_help() {
    for (binary, variable) in [(env!("CARGO_BIN_EXE_worker"), "SMTP_URL"), (env!("CARGO_BIN_EXE_worker"), "REDIS_URL")]
    {
        let output = Command::new(binary)
            .arg("--help")
            .env(variable, "redis://user:hunter2@db.example:6379")
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains(variable), "{help}");
        assert!(!help.contains("hunter2"), "{variable}'s password is in --help");
    }
}

#[tokio::test]
async fn a_workers_metrics_label_queues_only_as_named() {
    // The queue label follows the queue names a deployment allows: bounded as they are.
    let system = System::start_with(|config| config.isolation.tenant_max_queues = 2).await;
    let addr = format!("127.0.0.1:{}", shared::testkit::free_port());
    let _worker = system.spawn_worker_process(&[("METRICS_ADDR", &addr)]);
    for queue in ["a", "b", "c"] {
        system.post("/v1/jobs", &json!({"type": "noop", "queue": queue}), &[]).await;
    }
    let page = support::eventually(Duration::from_secs(10), "two jobs counted", || async {
        let page = scrape(&addr).await?;
        page.matches("jobs_attempts_total{").count().eq(&2).then_some(page)
    })
    .await;
    assert!(!page.contains(r#"queue="c""#), "{page}");
}
