//! Bounded bytes: a payload cap, per-tenant quotas on live jobs and stored
//! bytes that the scripts keep exactly, admission control before Redis is
//! full, and records that ask to be forgotten.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::testkit::RedisServer;
use support::{System, client_for, eventually, token};

fn mail(text_bytes: usize) -> Value {
    json!({"type": "email.send", "queue": "parked",
           "payload": {"to": "ada@example.org", "subject": "s", "text": "x".repeat(text_bytes)}})
}

#[tokio::test]
async fn a_payload_over_the_cap_is_refused_naming_the_limit() {
    let system = System::start_with(|config| config.isolation.max_payload_bytes = 1024).await;
    let (status, error, _) = system.post("/v1/jobs", &mail(2000), &[]).await;
    assert_eq!(
        (status, error["code"].as_str(), error["field"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"), Some("payload")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("1024"), "{error}");
    let (status, error, _) = system.post("/v1/jobs/batch", &json!({"jobs": [mail(10), mail(2000)]}), &[]).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("jobs[1].payload")), "{error}");
    system.submit(mail(500)).await;
}

#[tokio::test]
async fn a_tenant_past_its_live_jobs_quota_gets_429_with_the_figures_and_the_others_do_not() {
    let system = System::start_with(|config| config.isolation.tenant_max_live_jobs = 10).await;
    let (status, body, _) =
        system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 8]}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, error, _) =
        system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 3]}), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("8 live jobs") && message.contains("10") && message.contains("TENANT_MAX_LIVE_JOBS"),
        "{message}"
    );
    let other = client_for(&token("globex", "jobs:write jobs:read", Duration::from_secs(3600)));
    let response = other.post(system.url("/v1/jobs")).json(&json!({"type": "noop"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // Finished jobs are not live: once they run, there is room again.
    let worker = system.spawn_worker();
    eventually(Duration::from_secs(15), "room for three more", || async {
        let (status, _, _) =
            system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 3]}), &[]).await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tenant_past_its_bytes_quota_gets_429_until_its_records_are_deleted() {
    let system = System::start_with(|config| {
        config.isolation.tenant_max_bytes = 50_000;
        config.retention.succeeded_ttl_secs = 1;
    })
    .await;
    for _ in 0..4 {
        system.submit(mail(10_000)).await;
    }
    let (status, error, _) = system.post("/v1/jobs", &mail(10_000), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("TENANT_MAX_BYTES"), "{error}");
    // Sent, kept a second, deleted: the bytes come back.
    let worker = system.spawn_worker_with(|c| {
        c.queues = vec!["parked".into()];
        c.retention.succeeded_ttl_secs = 1;
    });
    eventually(Duration::from_secs(20), "the quota free again", || async {
        let (status, _, _) = system.post("/v1/jobs", &mail(10_000), &[]).await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn near_maxmemory_new_jobs_get_storage_full_while_workers_finish_and_free_it() {
    let redis = RedisServer::start_with_args(&["--maxmemory", "64mb"]);
    let system = System::start_on(redis, |config| {
        config.isolation.tenant_max_bytes = 0;
        config.retention.succeeded_ttl_secs = 1;
    })
    .await;
    let batch = json!({"jobs": vec![mail(60_000); 15]});
    // Fill Redis with jobs no worker runs yet, until the API stops taking them.
    let refusal = eventually(Duration::from_secs(60), "a refusal", || async {
        let (status, body, _) = system.post("/v1/jobs/batch", &batch, &[]).await;
        (status != StatusCode::ACCEPTED).then_some((status, body))
    })
    .await;
    assert_eq!(
        (refusal.0, refusal.1["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_full")),
        "{}",
        refusal.1
    );
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut system.redis_conn().await).await.unwrap();
    let field = |name: &str| -> u64 {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok()).unwrap()
    };
    assert!(field("used_memory") < field("maxmemory"), "Redis itself never had to refuse a write");

    // Workers still claim and finish; their records expire, and jobs are admitted again.
    let worker = system.spawn_worker_with(|c| {
        c.queues = vec!["parked".into()];
        c.concurrency = 32;
        c.retention.succeeded_ttl_secs = 1;
    });
    eventually(Duration::from_secs(60), "new jobs admitted again", || async {
        let (status, _, _) = system.post("/v1/jobs", &mail(100), &[]).await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_with_retention_secs_0_leaves_no_record_once_it_succeeds() {
    let system = System::start().await;
    let gone = system.submit(json!({"type": "noop", "retention_secs": 0})).await;
    let kept = system.submit(json!({"type": "noop", "retention_secs": 1})).await;
    let default = system.submit(json!({"type": "noop"})).await;
    let worker = system.spawn_worker();
    system.wait_for_status(&default, "succeeded", Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the forgotten job's record gone", || async {
        (system.get(&format!("/v1/jobs/{gone}")).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the one-second record gone", || async {
        (system.get(&format!("/v1/jobs/{kept}")).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    system.job(&default).await;
    let (_, queues) = system.get("/v1/queues").await;
    let default_queue = queues["queues"].as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap().clone();
    assert_eq!(default_queue["succeeded"], 1, "only the kept record is counted: {queues}");
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    let (status, error, _) = system.post("/v1/jobs", &json!({"type": "noop", "retention_secs": 40_000_000}), &[]).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("retention_secs")));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_rate_limit_charges_large_jobs_by_their_bytes() {
    // A bucket of 1,000 tokens that refills 10 a second: without a charge for
    // bytes, 1,000 jobs of 60 KiB (60 MB) would go in at once.
    let system = System::start_with(|config| {
        config.rate_limit.rate_limit_per_sec = 10;
        config.rate_limit.rate_limit_burst = 1_000;
    })
    .await;
    let mut accepted = 0;
    for _ in 0..1_000 {
        let (status, body, headers) = system.post("/v1/jobs", &mail(60 * 1024), &[]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["code"], "rate_limited", "{body}");
            assert!(headers.contains_key("retry-after"));
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        accepted += 1;
    }
    // Each costs a token per 4 KiB of what is stored (16): about 1,000 / 16, plus
    // what refilled meanwhile.
    assert!((55..=80).contains(&accepted), "{accepted} jobs of 60 KiB went in");
    // Small jobs still cost one token each.
    let small = client_for(&token("globex", "jobs:write", Duration::from_secs(3600)));
    let batch = json!({"jobs": vec![json!({"type": "noop"}); 1_000]});
    let response = small.post(system.url("/v1/jobs/batch")).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "a batch of 1,000 small jobs fits a bucket of 1,000");
}
