//! Cancel is honoured on every path and costs O(1); counts, the listing index
//! and a record's history never drift or grow without bound.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shared::keys::Keys;
use shared::store::StoreConfig;
use support::{System, TENANT, TEST_LEASE_SECS};

/// One REAP pass with these retention settings, as a worker's acker runs it.
async fn reap(system: &System, config: &StoreConfig) {
    let mut conn = system.redis_conn().await;
    shared::backend::reap(&mut conn, &Keys::new(&system.prefix), config, Duration::from_secs(TEST_LEASE_SECS))
        .await
        .expect("reap runs");
}

fn short_retention(system: &System, secs: u64) -> StoreConfig {
    StoreConfig {
        prefix: system.prefix.clone(),
        succeeded_ttl: Duration::from_secs(secs),
        failed_ttl: Duration::from_secs(secs),
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn a_cancelled_job_handed_back_by_a_draining_worker_ends_cancelled() {
    let system = System::start().await;
    // The mail server takes 10 s to answer: the handler is mid-send through the drain.
    system.smtp.set_reply_delay(Duration::from_secs(10));
    let mut worker = system.spawn_worker_process(&[("SHUTDOWN_GRACE_SECS", "1")]);
    let mail = json!({"to": "ada@example.org", "subject": "Welcome", "text": "Hello"});
    let id = system.submit(json!({"type": "email.send", "payload": mail})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    let (status, body, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "flagged while running: {body}");

    let exit = worker.terminate(Duration::from_secs(15)).expect("the worker exits after its grace");
    assert!(exit.success(), "{exit:?}");
    let record = system.job(&id).await;
    assert_eq!(record["status"], "cancelled", "{record}");
}

#[tokio::test]
async fn cancelling_the_last_of_a_million_queued_jobs_takes_under_a_millisecond_of_redis_time() {
    let system = System::start().await;
    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    // A million ids ahead of the job on its ready list (filled server-side: only
    // the list's length matters to what cancel costs).
    let fill = "for c = 0, 199 do local ids = {} for i = 1, 5000 do ids[i] = 'filler-' .. (c * 5000 + i) end \
                redis.call('RPUSH', KEYS[1], unpack(ids)) end return redis.call('LLEN', KEYS[1])";
    let filled: u64 =
        redis::Script::new(fill).key(keys.ready("bulk", support::TENANT)).invoke_async(&mut conn).await.unwrap();
    assert_eq!(filled, 1_000_000);
    let id = system.submit(json!({"type": "noop", "queue": "bulk"})).await;

    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(0).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn).await.unwrap();
    let (status, body, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");

    // SLOWLOG entries: [id, at, micros, [command, args…], …]; the cancel is the CANCEL script's call.
    let cancel = shared::scripts::CANCEL.get_hash().to_owned();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(100).query_async(&mut conn).await.unwrap();
    let micros = entries
        .iter()
        .find_map(|entry| {
            let fields: Vec<redis::Value> = redis::from_redis_value(entry.clone()).ok()?;
            let micros: u64 = redis::from_redis_value(fields.get(2)?.clone()).ok()?;
            let args: Vec<String> = redis::from_redis_value(fields.get(3)?.clone()).ok()?;
            (args.get(1)? == &cancel && args.contains(&id)).then_some(micros)
        })
        .expect("the cancel's script call is in the slow log");
    assert!(micros < 1_000, "cancel took {micros} µs of Redis time");
}

#[tokio::test]
async fn a_job_ending_twice_in_one_retention_second_is_counted_down_once() {
    let system = System::start_with(|config| config.retention.failed_ttl_secs = 1).await;
    let id = system.submit(json!({"type": "noop", "queue": "idle"})).await;
    // Both ends fall in one retention second: start just after a second begins.
    let millis = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1_050 - millis.min(1_000)))).await;
    for action in ["cancel", "retry", "cancel"] {
        let (status, body, _) = system.post(&format!("/v1/jobs/{id}/{action}"), &json!({}), &[]).await;
        assert!(status.is_success(), "{action}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    reap(&system, &short_retention(&system, 1)).await;

    let counts: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(Keys::new(&system.prefix).tenant_counts(TENANT))
        .query_async(&mut system.redis_conn().await)
        .await
        .unwrap();
    assert!(counts.iter().all(|(_, n)| *n == 0), "every count is back to 0: {counts:?}");
    assert_eq!(system.get(&format!("/v1/jobs/{id}")).await.0, StatusCode::NOT_FOUND, "the record was swept");
}

#[tokio::test]
async fn the_listing_keeps_a_job_scheduled_further_ahead_than_any_retention() {
    let system = System::start().await;
    let id = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    // Retention of 1 s: the sweep after it must still list the job.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    reap(&system, &short_retention(&system, 1)).await;
    let (_, list) = system.get("/v1/jobs").await;
    let listed: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [id.as_str()], "{list}");
}

#[tokio::test]
async fn a_jobs_history_keeps_its_last_50_transitions_and_counts_the_rest() {
    let system = System::start().await;
    let id = system.submit(json!({"type": "noop", "queue": "idle"})).await;
    for _ in 0..40 {
        for action in ["cancel", "retry"] {
            let (status, body, _) = system.post(&format!("/v1/jobs/{id}/{action}"), &json!({}), &[]).await;
            assert!(status.is_success(), "{action}: {body}");
        }
    }
    // 81 transitions: queued, then 40 × (cancelled, queued).
    let (status, body) = system.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 50, "{body}");
    assert_eq!(body["dropped"], 31, "{body}");
    assert_eq!(events.last().unwrap()["status"], "queued");
    let state: String = redis::cmd("HGET")
        .arg(Keys::new(&system.prefix).state())
        .arg(&id)
        .query_async(&mut system.redis_conn().await)
        .await
        .unwrap();
    assert_eq!(state.lines().count(), 51, "the header and 50 lines");
}
