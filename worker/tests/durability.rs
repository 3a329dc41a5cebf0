//! Durability as offered: a failover to a real replica (`redis-server
//! --replicaof`) loses acknowledged jobs unless the API waits for the replica
//! before its 202 (`ENQUEUE_WAIT_REPLICAS`), and with the wait it loses none.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::keys::Keys;
use shared::testkit::RedisServer;
use support::proxy::Proxy;
use support::{System, eventually, signal};

/// Which of `ids` have a record on `redis`.
async fn stored(redis: &RedisServer, prefix: &str, ids: &[String]) -> Vec<String> {
    let mut conn = shared::store::connect(&redis.url(), Some(Duration::from_secs(5))).await.expect("connects");
    let mut found = Vec::new();
    for chunk in ids.chunks(500) {
        let specs: Vec<Option<String>> =
            redis::cmd("HMGET").arg(Keys::new(prefix).spec()).arg(chunk).query_async(&mut conn).await.unwrap();
        found.extend(chunk.iter().zip(specs).filter(|(_, spec)| spec.is_some()).map(|(id, _)| id.clone()));
    }
    found
}

fn waiting_for_one_replica(timeout_ms: u64) -> impl FnOnce(&mut api::config::ApiConfig) {
    move |config| {
        config.durability.enqueue_wait_replicas = 1;
        config.durability.enqueue_wait_timeout_ms = timeout_ms;
    }
}

// Multi-threaded: the proxy forwards while the harness waits for the replica's sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_wait_a_failover_loses_an_acknowledged_job() {
    let mut system = System::start().await;
    // The replica follows through a link the test can cut.
    let link = Proxy::start(system.redis.port()).await;
    let replica = RedisServer::start_replica_of(link.port());
    // The link fails; the primary acknowledges a job and dies; the replica takes over.
    link.partition();
    let id = system.submit(json!({"type": "noop"})).await;
    system.redis.kill();
    replica.promote();
    assert!(stored(&replica, &system.prefix, std::slice::from_ref(&id)).await.is_empty(), "the 202'd job is gone");
}

#[tokio::test]
async fn with_the_wait_every_acknowledged_job_survives_a_failover() {
    let mut system = System::start_with(waiting_for_one_replica(500)).await;
    let replica = RedisServer::start_replica_of(system.redis.port());
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, url) =
            (system.http.clone(), system.url(if client % 2 == 0 { "/v1/jobs" } else { "/v1/jobs/batch" }));
        let (accepted, refused) = (accepted.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            let body = if client % 2 == 0 {
                json!({"type": "noop"})
            } else {
                json!({"jobs": vec![json!({"type": "noop"}); 10]})
            };
            let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
            while tokio::time::Instant::now() < deadline {
                let Ok(response) = http.post(&url).json(&body).send().await else { continue };
                let status = response.status();
                let reply: Value = response.json().await.unwrap_or(Value::Null);
                if status == StatusCode::ACCEPTED {
                    let ids = reply
                        .get("ids")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_else(|| vec![reply["id"].clone()]);
                    accepted.lock().unwrap().extend(ids.iter().map(|id| id.as_str().unwrap().to_owned()));
                } else {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
                    refused.lock().unwrap().push(reply["code"].as_str().unwrap_or_default().to_owned());
                }
            }
        }));
    }
    // The primary is killed under the load.
    tokio::time::sleep(Duration::from_millis(700)).await;
    system.redis.kill();
    for client in clients {
        client.await.unwrap();
    }
    replica.promote();

    let ids = accepted.lock().unwrap().clone();
    assert!(ids.len() >= 100, "only {} jobs were accepted before the kill", ids.len());
    let found = stored(&replica, &system.prefix, &ids).await;
    let refused = refused.lock().unwrap().clone();
    let mut by_code = std::collections::BTreeMap::<&str, usize>::new();
    for code in &refused {
        *by_code.entry(code.as_str()).or_default() += 1;
    }
    eprintln!(
        "failover with the wait: {} jobs got a 202, {} of them are on the promoted replica; 503s: {by_code:?}",
        ids.len(),
        found.len()
    );
    assert_eq!(found.len(), ids.len(), "jobs that got a 202 but are not on the promoted replica");
    assert!(!refused.is_empty(), "requests after the kill were refused");
    for code in &refused {
        assert!(["unavailable", "outcome_unknown", "not_replicated"].contains(&code.as_str()), "{code}");
    }
}

#[tokio::test]
async fn a_wait_that_times_out_answers_not_replicated_and_the_key_replays_once_the_replica_is_back() {
    let system = System::start_with(waiting_for_one_replica(300)).await;
    let replica = RedisServer::start_replica_of(system.redis.port());
    let body = json!({"type": "noop"});
    let key = [("Idempotency-Key", "waited-1")];

    signal(replica.pid(), "-STOP");
    let (status, error, headers) = system.post("/v1/jobs", &body, &key).await;
    signal(replica.pid(), "-CONT");
    assert_eq!((status, error["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_replicated")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("Idempotency-Key"), "{error}");
    assert!(headers.contains_key("retry-after"));

    let replayed = eventually(Duration::from_secs(10), "the replayed submission acknowledged", || async {
        let (status, record, headers) = system.post("/v1/jobs", &body, &key).await;
        (status == StatusCode::ACCEPTED).then_some((record, headers))
    })
    .await;
    assert_eq!(replayed.1["idempotent-replayed"], "true");
    let id = replayed.0["id"].as_str().unwrap().to_owned();
    assert_eq!(stored(&replica, &system.prefix, &[id]).await.len(), 1, "the replica has it");
}

#[tokio::test]
async fn waiting_for_the_disk_is_refused_at_start_up_by_a_redis_without_waitaof() {
    let system = System::start().await;
    let mut config = system.api_config();
    config.durability.enqueue_wait_aof = true;
    let err = api::build(&config).await.expect_err("the API refuses to start");
    assert!(format!("{err:#}").contains("7.2"), "{err:#}");
}
