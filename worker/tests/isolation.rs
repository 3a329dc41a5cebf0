//! One tenant cannot hurt the others: claims cost the same however many queues
//! exist, tenants share a queue fairly, a tenant's running jobs can be capped,
//! and queue names are bounded.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{System, client_for, eventually, token};

/// Redis time of every call of `script` since the last `SLOWLOG RESET`, in µs.
async fn script_micros(system: &System, script: &redis::Script) -> Vec<u64> {
    let entries: Vec<redis::Value> =
        redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(&mut system.redis_conn().await).await.unwrap();
    entries
        .iter()
        .filter_map(|entry| {
            let fields: Vec<redis::Value> = redis::from_redis_value(entry.clone()).ok()?;
            let micros: u64 = redis::from_redis_value(fields.get(2)?.clone()).ok()?;
            let args: Vec<String> = redis::from_redis_value(fields.get(3)?.clone()).ok()?;
            (args.get(1)? == script.get_hash()).then_some(micros)
        })
        .collect()
}

fn ids(batch: &Value) -> Vec<String> {
    batch["ids"].as_array().expect("ids").iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn after_a_tenant_named_two_thousand_queues_a_claim_costs_what_it_did_before() {
    let system = System::start_with(|config| config.isolation.tenant_max_queues = 10_000).await;
    let worker = system.spawn_worker_with(|c| c.concurrency = 50);
    for round in 0..2 {
        let jobs: Vec<Value> =
            (0..1000).map(|i| json!({"type": "noop", "queue": format!("flood-{round}-{i}")})).collect();
        let (status, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
        for id in ids(&batch) {
            system.wait_for_status(&id, "succeeded", Duration::from_secs(60)).await;
        }
    }
    // The flood's queues are empty now. A victim's job, and every claim meanwhile:
    let mut conn = system.redis_conn().await;
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(0).query_async(&mut conn).await.unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("slowlog-max-len").arg(10_000).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn).await.unwrap();
    let victim = system.submit(json!({"type": "noop", "queue": "victim"})).await;
    system.wait_for_status(&victim, "succeeded", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // one idle claim at least
    let claims = script_micros(&system, &shared::scripts::CLAIM).await;
    assert!(!claims.is_empty());
    let slowest = claims.iter().max().unwrap();
    assert!(*slowest < 1_000, "the slowest of {} claims took {slowest} µs", claims.len());
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_tenants_backlog_does_not_delay_another_tenants_jobs() {
    let system = System::start().await;
    let other = client_for(&token("globex", "jobs:write jobs:read", Duration::from_secs(3600)));
    // Tenant acme's backlog: 2,000 jobs of 50 ms, 10 s of work for one worker at concurrency 10.
    for _ in 0..2 {
        let jobs = vec![json!({"type": "sleep", "payload": {"ms": 50}}); 1000];
        let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let _worker = system.spawn_worker_process(&[("CONCURRENCY", "10")]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let submitted = Instant::now();
    let response = other
        .post(system.url("/v1/jobs/batch"))
        .json(&json!({"jobs": vec![json!({"type": "noop"}); 20]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let theirs = ids(&response.json().await.unwrap());
    for id in &theirs {
        eventually(Duration::from_secs(15), "globex's job succeeded", || async {
            let record: Value =
                other.get(system.url(&format!("/v1/jobs/{id}"))).send().await.ok()?.json().await.ok()?;
            (record["status"] == "succeeded").then_some(())
        })
        .await;
    }
    let took = submitted.elapsed();
    assert!(took < Duration::from_secs(1), "globex's 20 jobs took {took:?} behind acme's backlog");
}

#[tokio::test]
async fn a_tenants_running_jobs_stay_within_its_cap_and_others_use_the_rest() {
    let system = System::start().await;
    let other = client_for(&token("globex", "jobs:write jobs:read", Duration::from_secs(3600)));
    let _worker = system.spawn_worker_process(&[("CONCURRENCY", "8"), ("TENANT_MAX_RUNNING", "2")]);
    let jobs = vec![json!({"type": "sleep", "payload": {"ms": 400}}); 10];
    system.post("/v1/jobs/batch", &json!({"jobs": jobs.clone()}), &[]).await;
    other.post(system.url("/v1/jobs/batch")).json(&json!({"jobs": jobs})).send().await.unwrap();

    // Sample both tenants' running counts until everything is done.
    let (mut most_acme, mut most_globex) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = |body: &Value| body["jobs"].as_array().map_or(0, Vec::len);
        let (_, acme) = system.get("/v1/jobs?status=running").await;
        let globex: Value =
            other.get(system.url("/v1/jobs?status=running")).send().await.unwrap().json().await.unwrap();
        most_acme = most_acme.max(running(&acme));
        most_globex = most_globex.max(running(&globex));
        let (_, done) = system.get("/v1/jobs?status=succeeded&limit=100").await;
        if running(&done) == 10 && running(&globex) == 0 && most_globex > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs did not finish");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(most_acme, 2, "acme ran at most its cap, and used it");
    assert_eq!(most_globex, 2, "and so did globex");
}

#[tokio::test]
async fn queue_names_are_bounded_per_tenant_or_fixed_by_the_operator() {
    let system = System::start_with(|config| config.isolation.tenant_max_queues = 3).await;
    for queue in ["a", "b", "c", "a"] {
        system.submit(json!({"type": "noop", "queue": queue})).await;
    }
    let (status, error, _) = system.post("/v1/jobs", &json!({"type": "noop", "queue": "d"}), &[]).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("too_many_queues")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains('3'), "{error}");
    // Another tenant has queues of its own.
    let other = client_for(&token("globex", "jobs:write jobs:read", Duration::from_secs(3600)));
    let response =
        other.post(system.url("/v1/jobs")).json(&json!({"type": "noop", "queue": "d"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let fixed =
        system.start_another_api_with(|config| config.isolation.queues_allowed = vec!["a".into(), "b".into()]).await;
    let response =
        system.http.post(format!("{fixed}/v1/jobs")).json(&json!({"type": "noop", "queue": "c"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("queue_not_allowed"), Some("queue")),
        "{error}"
    );
}

#[tokio::test]
async fn retries_and_cancels_are_charged_to_the_rate_limit_and_retry_failed_is_bounded() {
    let system = System::start_with(|config| {
        config.rate_limit.rate_limit_per_sec = 1;
        config.rate_limit.rate_limit_burst = 1_000;
    })
    .await;
    // 1,000 jobs take the whole bucket; cancelling one more needs a token too.
    let (status, batch, _) = system
        .post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop", "queue": "idle"}); 1000]}), &[])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let first = ids(&batch)[0].clone();
    let (status, error, headers) = system.post(&format!("/v1/jobs/{first}/cancel"), &json!({}), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{error}");
    assert!(headers.contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, _) = system.post(&format!("/v1/jobs/{first}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, error, _) = system.post(&format!("/v1/jobs/{first}/retry"), &json!({}), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{error}");

    let (status, error, _) = system.post("/v1/queues/idle/retry-failed?limit=1001", &json!({}), &[]).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "{error}");
    let (status, error, _) = system.post("/v1/queues/no%20such/retry-failed", &json!({}), &[]).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("queue")), "{error}");
}

#[tokio::test]
async fn a_tenant_flooding_past_its_rate_limit_is_refused_before_its_batches_are_parsed() {
    let system = System::start_with(|config| {
        config.rate_limit.rate_limit_per_sec = 10;
        config.rate_limit.rate_limit_burst = 1_000;
    })
    .await;
    let batch = json!({"jobs": vec![json!({"type": "noop"}); 1_000]});
    let (status, body, _) = system.post("/v1/jobs/batch", &batch, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body, _) = system.post("/v1/jobs/batch", &batch, &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
    // As large a body again is refused at once: this one is not even JSON, which
    // parsing would have answered with 400.
    let garbage = "x".repeat(batch.to_string().len());
    let response = system
        .http
        .post(system.url("/v1/jobs/batch"))
        .header("content-type", "application/json")
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // A request the bucket may have room for still goes to it, and other tenants are untouched.
    eventually(Duration::from_secs(5), "one small job once a token is back", || async {
        let (status, _, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    let other = client_for(&token("globex", "jobs:write", Duration::from_secs(3600)));
    let response = other.post(system.url("/v1/jobs/batch")).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn another_tenants_trickle_does_not_leave_worker_slots_idle() {
    let system = System::start().await;
    // 600 jobs of 50 ms for a worker at concurrency 10: 3 s of work with every slot busy.
    let jobs = vec![json!({"type": "sleep", "payload": {"ms": 50}}); 600];
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let theirs = ids(&body);
    // Meanwhile another tenant submits a job every 50 ms, so it is often in the
    // queue's ring beside the backlog, with one job ready.
    let other = client_for(&token("globex", "jobs:write jobs:read", Duration::from_secs(3600)));
    let trickle = tokio::spawn({
        let url = system.url("/v1/jobs");
        async move {
            for _ in 0..200 {
                let _ = other.post(&url).json(&json!({"type": "noop"})).send().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let started = Instant::now();
    let _worker = system.spawn_worker_process(&[("CONCURRENCY", "10")]);
    let last = theirs.last().unwrap();
    eventually(Duration::from_secs(20), "the backlog drained", || async {
        let record = system.job(last).await;
        (record["status"] == "succeeded").then_some(())
    })
    .await;
    let took = started.elapsed();
    trickle.abort();
    // The start-up of the worker process and the last claims cost a little; idle
    // slots between claims cost much more (5.7 s measured when a claim left them).
    assert!(took < Duration::from_millis(4_500), "600 jobs of 50 ms at concurrency 10 took {took:?}");
    eprintln!("600 jobs of 50 ms at concurrency 10 took {took:?} beside another tenant's trickle");
}

/// `cmdstat_evalsha` calls so far: every script call the API makes.
async fn script_calls(system: &System) -> u64 {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut system.redis_conn().await).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_retry_failed_loop_past_the_rate_limit_is_refused_without_running_scripts() {
    let system = System::start_with(|config| {
        config.rate_limit.rate_limit_per_sec = 1;
        config.rate_limit.rate_limit_burst = 1_000;
    })
    .await;
    let jobs = vec![json!({"type": "fail", "payload": {"times": 5, "permanent": true}, "max_attempts": 1}); 1000];
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let worker = system.spawn_worker();
    eventually(Duration::from_secs(20), "1,000 failed jobs", || async {
        let (_, queues) = system.get("/v1/queues").await;
        let failed = queues["queues"].as_array()?.iter().find(|q| q["name"] == "default")?["failed"].as_u64()?;
        (failed == 1000).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
    // The bucket is empty (the batch took it): the script refuses, and says when to come back.
    let (status, error, _) = system.post("/v1/queues/default/retry-failed?limit=100", &json!({}), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{error}");
    let before = script_calls(&system).await;
    for _ in 0..50 {
        let (status, _, _) = system.post("/v1/queues/default/retry-failed?limit=100", &json!({}), &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let after = script_calls(&system).await;
    assert!(after - before < 5, "50 refused calls ran {} scripts", after - before);
}
