//! Coming back from an outage: finished work is kept, claims whose reply was lost
//! cost no attempt, and the API says when it cannot know whether a job was stored.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::keys::Keys;
use shared::store::StoreConfig;
use support::proxy::Proxy;
use support::{System, TEST_LEASE_SECS, WorkerLog, eventually};

fn ids(batch: &Value) -> Vec<String> {
    batch["ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn outcomes_finished_while_redis_slept_longer_than_the_lease_are_all_recorded() {
    let system = System::start().await;
    let _runner = system.spawn_worker_process(&[("QUEUES", "q")]);
    let _reaper = system.spawn_worker_process(&[("QUEUES", "other")]);
    let jobs = vec![json!({"type": "sleep", "payload": {"ms": 1000}, "queue": "q", "max_attempts": 1}); 10];
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    let ids = ids(&batch);
    for id in &ids {
        system.wait_for_status(id, "running", Duration::from_secs(10)).await;
    }

    // Redis sleeps twice the lease; the jobs end meanwhile and their outcomes wait
    // in the runner. The first script to run afterwards is another worker's REAP,
    // sent right behind the sleep (Redis serves waiting clients in arrival order).
    let mut sleeper = system.redis_conn().await;
    let mut reaper = system.redis_conn().await;
    let sleep = tokio::spawn(async move {
        let _: () = redis::cmd("DEBUG").arg("SLEEP").arg(4).query_async(&mut sleeper).await.expect("Redis sleeps");
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let lease = Duration::from_secs(TEST_LEASE_SECS);
    let config = StoreConfig { prefix: system.prefix.clone(), ..StoreConfig::default() };
    shared::backend::reap(&mut reaper, &Keys::new(&system.prefix), &config, lease).await.expect("reap runs");
    sleep.await.unwrap();

    for id in &ids {
        let record = eventually(Duration::from_secs(20), "the job finished", || async {
            let record = system.job(id).await;
            ["succeeded", "failed"].contains(&record["status"].as_str()?).then_some(record)
        })
        .await;
        assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{record}");
    }
}

#[tokio::test]
async fn a_partitioned_workers_finished_outcome_is_recorded_when_nobody_else_took_the_job() {
    let system = System::start().await;
    let proxy = Proxy::start(system.redis.port()).await;
    let url = proxy.url();
    let _runner = system.spawn_worker_process(&[("QUEUES", "q"), ("REDIS_URL", &url)]);
    let _reaper = system.spawn_worker_process(&[("QUEUES", "other")]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 800}, "queue": "q", "max_attempts": 1})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;

    // The runner is cut off: its job ends, but neither heartbeat nor outcome gets through.
    proxy.partition();
    let reaped = system.wait_for_status(&id, "failed", Duration::from_secs(15)).await;
    assert!(reaped["last_error"].as_str().unwrap().contains("lease expired"), "{reaped}");
    proxy.heal();

    let record = system.wait_for_status(&id, "succeeded", Duration::from_secs(15)).await;
    assert_eq!(record["attempts"], 1, "{record}");
    assert_eq!(record["result"], json!({"slept_ms": 800}));
}

#[tokio::test]
async fn a_claim_whose_reply_never_arrived_does_not_use_up_the_attempt() {
    let system = System::start().await;
    let log = WorkerLog::new();
    let _worker = system.spawn_logged_worker_process(&[], &log);
    let id = system.submit(json!({"type": "noop", "delay_ms": 1500, "max_attempts": 1})).await;

    // Scripts that write wait for 7 s; the worker's claim for the job, due
    // meanwhile, waits with them and its reply times out after 5 s. Then it runs.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut conn = system.redis_conn().await;
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("WRITE").query_async(&mut conn).await.unwrap();
    eventually(Duration::from_secs(10), "the worker's claim timing out", || async {
        log.text().contains("claim failed").then_some(())
    })
    .await;

    let record = eventually(Duration::from_secs(20), "the job finished", || async {
        let (status, record) = system.get(&format!("/v1/jobs/{id}")).await;
        (status == StatusCode::OK && ["succeeded", "failed"].contains(&record["status"].as_str()?)).then_some(record)
    })
    .await;
    assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{record}");
}

#[tokio::test]
async fn a_submission_whose_reply_was_lost_says_outcome_unknown_and_its_key_replays_it() {
    let system = System::start().await;
    let body = json!({"type": "noop", "queue": "idle"});
    let key = [("Idempotency-Key", "lost-reply-1")];

    system.redis.freeze();
    let (status, error, headers) = system.post("/v1/jobs", &body, &key).await;
    system.redis.thaw();
    assert_eq!((status, error["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("outcome_unknown")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Idempotency-Key"), "{message}");
    assert!(headers.contains_key("retry-after"));

    // It was stored after all: the same key answers with that job, and there is one.
    let (status, replay, headers) = system.post("/v1/jobs", &body, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (_, list) = system.get("/v1/jobs").await;
    let listed: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [replay["id"].as_str().unwrap()]);
}

#[tokio::test]
async fn a_submission_refused_before_it_reached_redis_says_nothing_was_stored() {
    let mut system = System::start().await;
    system.redis.kill();
    // The first request may find the old connection half-open; once the API
    // knows Redis refuses connections, nothing can have been sent.
    let error = eventually(Duration::from_secs(10), "a refusal", || async {
        let (status, error, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        (error["code"] == "unavailable").then_some(error)
    })
    .await;
    assert!(error["message"].as_str().unwrap().contains("nothing was stored"), "{error}");
    system.redis.restart();
    eventually(Duration::from_secs(20), "the API serving again", || async {
        (system.get("/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
}
