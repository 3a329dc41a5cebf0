//! The HTTP contract: validation errors and their codes, idempotency, batches,
//! reads, listing, cancel and retry — against a real Redis.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::System;

#[tokio::test]
async fn a_job_is_accepted_with_its_record_and_location() {
    let system = System::start().await;
    let (status, record, headers) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = record["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(record["status"], "queued");
    assert_eq!(record["tenant"], support::TENANT);
    assert_eq!(record["queue"], "default");
    assert_eq!(record["max_attempts"], 5);
    let stored = system.job(id).await;
    assert_eq!(stored["status"], "queued");
    assert_eq!(stored["type"], "noop");
    for field in
        ["created_at", "scheduled_at", "started_at", "finished_at", "last_error", "result", "payload", "attempts"]
    {
        assert!(stored.get(field).is_some(), "record lacks {field}: {stored}");
    }
}

async fn raw_post(system: &System, body: &str, content_type: Option<&str>) -> (StatusCode, Value) {
    let mut request = system.http.post(system.url("/v1/jobs")).body(body.to_owned());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.contains("json"), "error bodies are JSON, got {content_type}");
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn bad_requests_get_a_status_and_a_json_code_naming_the_field() {
    let system = System::start().await;
    let json = Some("application/json");

    let (status, body) = raw_post(&system, "{not json", json).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));

    let (status, body) = raw_post(&system, r#"{"type": "teleport"}"#, json).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_type")));

    let (status, body) = raw_post(&system, r#"{"payload": {}}"#, json).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["message"].as_str().unwrap().contains("type"), "{body}");

    let (status, body) = raw_post(&system, r#"{"type": "sleep", "payload": {"ms": "long"}}"#, json).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("payload.ms")));

    let bad_mail =
        r#"{"type": "email.send", "payload": {"to": ["a@example.com", "nope"], "subject": "s", "text": "t"}}"#;
    let (status, body) = raw_post(&system, bad_mail, json).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("payload.to[1]")));

    let (status, body) = raw_post(&system, r#"{"type": "noop", "max_attempts": 0}"#, json).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("max_attempts")));

    let (status, body) =
        raw_post(&system, r#"{"type": "noop", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}"#, json).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("run_at")));

    let (status, body) = raw_post(&system, r#"{"type": "noop", "colour": "red"}"#, json).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) = raw_post(&system, r#"{"type": "noop"}"#, Some("text/plain")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")));

    let (status, body) = system.get("/v1/jobs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let (status, body) = system.get("/v1/nothing-here").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let response = system.http.delete(system.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "method_not_allowed");

    let (status, body, _) = system.post("/v1/queues/default/retry-failed?limit=lots", &json!({}), &[]).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "{body}");

    let (status, body) = system.get("/v1/jobs?status=done").await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")));

    // None of the rejected requests stored anything.
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let system = System::start_with(|config| config.max_body_bytes = 4096).await;
    let big = json!({"type": "sleep", "payload": {"ms": 1, "padding": "x".repeat(10_000)}}).to_string();
    let (status, body) = raw_post(&system, &big, Some("application/json")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_replays_the_same_job() {
    let system = System::start().await;
    let body = json!({"type": "sleep", "payload": {"ms": 1}});
    let key = [("idempotency-key", "\"order-42\"")];
    let (first, record, headers) = system.post("/v1/jobs", &body, &key).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    assert!(headers.get("idempotent-replayed").is_none());

    // Same body with its keys in another order: still a replay.
    let reordered = json!({"payload": {"ms": 1}, "type": "sleep"});
    let (again, replay, headers) = system.post("/v1/jobs", &reordered, &key).await;
    assert_eq!(again, StatusCode::ACCEPTED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay["id"], record["id"]);

    let (reused, err, _) = system.post("/v1/jobs", &json!({"type": "sleep", "payload": {"ms": 2}}), &key).await;
    assert_eq!((reused, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));

    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_create_exactly_one_job() {
    let system = System::start().await;
    let body = json!({"type": "noop"});
    let requests = (0..50).map(|_| system.post("/v1/jobs", &body, &[("idempotency-key", "burst-1")]));
    let responses = futures::future::join_all(requests).await;
    let mut ids: Vec<&str> = responses
        .iter()
        .map(|(status, record, _)| {
            assert_eq!(*status, StatusCode::ACCEPTED, "{record}");
            record["id"].as_str().unwrap()
        })
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "all 50 got the same id");
    let replays = responses.iter().filter(|(_, _, h)| h.get("idempotent-replayed").is_some()).count();
    assert_eq!(replays, 49);
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_is_enqueued_in_order_or_not_at_all() {
    let system = System::start().await;
    let jobs: Vec<Value> = (0..20).map(|ms| json!({"type": "sleep", "payload": {"ms": ms}})).collect();
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 20);
    for (ms, id) in ids.iter().enumerate() {
        assert_eq!(system.job(id.as_str().unwrap()).await["payload"]["ms"], ms);
    }

    let mut bad = jobs.clone();
    bad[7] = json!({"type": "sleep", "payload": {"ms": -1}});
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": bad}), &[]).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("jobs[7].payload.ms")));

    let too_many: Vec<Value> = (0..1001).map(|_| json!({"type": "noop"})).collect();
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": too_many}), &[]).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("jobs")));

    let (_, list) = system.get("/v1/jobs?limit=500").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 20, "rejected batches stored nothing");
}

#[tokio::test]
async fn a_batch_with_an_idempotency_key_replays_its_ids() {
    let system = System::start().await;
    let body = json!({"jobs": [{"type": "noop"}, {"type": "noop"}]});
    let key = [("idempotency-key", "batch-7")];
    let (_, first, _) = system.post("/v1/jobs/batch", &body, &key).await;
    let (status, second, headers) = system.post("/v1/jobs/batch", &body, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(first["ids"], second["ids"]);
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() {
    let system = System::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "noop" } else { "sleep" };
        let payload = if kind == "noop" { json!({}) } else { json!({"ms": 1}) };
        ids.push(system.submit(json!({"type": kind, "payload": payload, "queue": format!("q{}", i % 3)})).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".into(),
        };
        let (status, page) = system.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every job exactly once, newest first");

    let (_, sleeps) = system.get("/v1/jobs?type=sleep").await;
    assert_eq!(sleeps["jobs"].as_array().unwrap().len(), 3);
    let (_, q1) = system.get("/v1/jobs?queue=q1").await;
    assert_eq!(q1["jobs"].as_array().unwrap().len(), 2);
    let (_, queued) = system.get("/v1/jobs?status=queued&type=noop").await;
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn cancel_and_retry_follow_the_status_rules() {
    let system = System::start().await;
    let id = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    assert_eq!(system.job(&id).await["status"], "scheduled");

    let (status, record, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!((status, record["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (status, body, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")));

    let (status, record, _) = system.post(&format!("/v1/jobs/{id}/retry"), &json!({}), &[]).await;
    assert_eq!((status, record["status"].as_str()), (StatusCode::OK, Some("queued")));
    let (status, _, _) = system.post(&format!("/v1/jobs/{id}/retry"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "a queued job cannot be retried");

    let worker = system.spawn_worker();
    system.wait_for_status(&id, "succeeded", Duration::from_secs(10)).await;
    let (status, _, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "a succeeded job cannot be cancelled");
    let statuses: Vec<Value> = system.history(&id).await.iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, ["scheduled", "cancelled", "queued", "running", "succeeded"].map(Value::from));

    let missing = "00000000-0000-0000-0000-000000000000";
    let (status, _, _) = system.post(&format!("/v1/jobs/{missing}/retry"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queued_job_cancelled_before_a_worker_starts_never_runs() {
    let system = System::start().await;
    let cancelled = system.submit(json!({"type": "noop"})).await;
    let kept = system.submit(json!({"type": "noop"})).await;
    let (status, _, _) = system.post(&format!("/v1/jobs/{cancelled}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let worker = system.spawn_worker();
    system.wait_for_status(&kept, "succeeded", Duration::from_secs(10)).await;
    let record = system.job(&cancelled).await;
    assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("cancelled"), Some(0)));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn queues_report_counts_and_live_workers() {
    let system = System::start().await;
    system.submit(json!({"type": "noop", "queue": "reports"})).await;
    system.submit(json!({"type": "noop", "queue": "reports", "delay_ms": 60_000})).await;
    let (status, body) = system.get("/v1/queues").await;
    assert_eq!(status, StatusCode::OK);
    let reports = body["queues"].as_array().unwrap().iter().find(|q| q["name"] == "reports").cloned().unwrap();
    assert_eq!((reports["queued"].as_u64(), reports["scheduled"].as_u64()), (Some(1), Some(1)));

    let worker = system.spawn_worker_with(|c| c.queues = vec!["other".into()]);
    let workers = support::eventually(Duration::from_secs(5), "a worker heartbeat", || async {
        let (_, body) = system.get_admin("/v1/queues").await;
        body["workers"].as_array().filter(|w| !w.is_empty()).cloned()
    })
    .await;
    assert_eq!(workers[0]["queues"], json!(["other"]));
    assert_eq!(workers[0]["concurrency"], 8);
    assert!(workers[0]["last_heartbeat"].is_string());
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn demo_job_types_can_be_turned_off() {
    let system = System::start_with(|c| c.demo.demo_jobs = Some(false)).await;
    for kind in ["noop", "sleep", "fail"] {
        let (status, body, _) = system.post("/v1/jobs", &json!({"type": kind}), &[]).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_type")), "{kind}");
    }
    let mail = json!({"type": "email.send", "payload": {"to": "a@example.com", "subject": "s", "text": "t"}});
    assert_eq!(system.post("/v1/jobs", &mail, &[]).await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn health_and_readiness_are_open() {
    let system = System::start().await;
    assert_eq!(system.get("/healthz").await.0, StatusCode::OK);
    let (status, body) = system.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let system = System::start().await;
    let addr = system.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(api::HEADER_READ_TIMEOUT + Duration::from_secs(5), slow.read(&mut buffer)).await;
    let closed_after = started.elapsed();
    // The server answers 408 or just closes; either way the connection ends.
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408"), "{:?}", &buffer[..n]),
        Err(_) => panic!("the connection was still open after {closed_after:?}"),
    }
    assert!(closed_after >= api::HEADER_READ_TIMEOUT - Duration::from_secs(1), "closed after {closed_after:?}");
    // Meanwhile the server kept serving others.
    assert_eq!(system.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn idempotency_holds_across_two_api_instances() {
    let system = System::start().await;
    let other = system.start_another_api().await;
    let body = json!({"type": "noop"});
    let requests = (0..40).map(|n| {
        let base = if n % 2 == 0 { system.base.clone() } else { other.clone() };
        let (http, body) = (system.http.clone(), body.clone());
        async move {
            let response = http
                .post(format!("{base}/v1/jobs"))
                .header("idempotency-key", "shared-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }
    });
    let mut ids = futures::future::join_all(requests).await;
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job for one key, whichever instance answered");
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_mixing_queues_and_delays_files_each_job_where_it_belongs() {
    let system = System::start().await;
    let job = |queue: &str, delay: u64, ms: u64| json!({"type": "sleep", "queue": queue, "delay_ms": delay, "payload": {"ms": ms}});
    let jobs =
        vec![job("a", 0, 1), job("b", 60_000, 2), job("a", 60_000, 3), job("b", 0, 4), job("a", 0, 5), job("a", 0, 6)];
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let expected = [
        ("a", "queued", 1),
        ("b", "scheduled", 2),
        ("a", "scheduled", 3),
        ("b", "queued", 4),
        ("a", "queued", 5),
        ("a", "queued", 6),
    ];
    for (id, (queue, status, ms)) in ids.iter().zip(expected) {
        let record = system.job(id).await;
        assert_eq!((record["queue"].as_str(), record["status"].as_str()), (Some(queue), Some(status)));
        assert_eq!(record["payload"]["ms"], ms, "ids come back in request order");
    }
    let (_, queues) = system.get("/v1/queues").await;
    let count = |name: &str, field: &str| {
        queues["queues"].as_array().unwrap().iter().find(|q| q["name"] == name).map(|q| q[field].as_u64().unwrap())
    };
    assert_eq!((count("a", "queued"), count("a", "scheduled")), (Some(3), Some(1)));
    assert_eq!((count("b", "queued"), count("b", "scheduled")), (Some(1), Some(1)));

    // One slot: queue `a` runs in submission order.
    let worker = system.spawn_worker_with(|c| {
        c.queues = vec!["a".into()];
        c.concurrency = 1;
    });
    let mut started = Vec::new();
    for index in [0, 4, 5] {
        let record = system.wait_for_status(&ids[index], "succeeded", Duration::from_secs(10)).await;
        started.push(record["started_at"].as_str().unwrap().to_owned());
    }
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "first in, first out");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn queue_latency_is_the_age_of_the_oldest_ready_job() {
    let system = System::start().await;
    let submitted = std::time::Instant::now();
    let id = system.submit(json!({"type": "noop", "queue": "slow"})).await;
    system.submit(json!({"type": "noop", "queue": "slow"})).await;
    // Let the oldest job age: latency is what is being measured.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let latency = |body: &Value| {
        body["queues"].as_array().unwrap().iter().find(|q| q["name"] == "slow").unwrap()["latency_ms"].as_u64().unwrap()
    };
    let (_, body) = system.get_admin("/v1/queues").await;
    let waited = submitted.elapsed().as_millis() as u64;
    let measured = latency(&body);
    assert!((250..=waited + 50).contains(&measured), "latency {measured} ms after {waited} ms");

    let worker = system.spawn_worker();
    system.wait_for_status(&id, "succeeded", Duration::from_secs(10)).await;
    let drained = support::eventually(Duration::from_secs(10), "the queue to drain", || async {
        let (_, body) = system.get_admin("/v1/queues").await;
        let queue = body["queues"].as_array().unwrap().iter().find(|q| q["name"] == "slow").cloned().unwrap();
        (queue["queued"] == 0).then_some(body)
    })
    .await;
    assert_eq!(latency(&drained), 0);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn listing_pages_through_a_whole_batch_created_in_one_millisecond() {
    let system = System::start().await;
    let jobs: Vec<Value> = (0..1000).map(|ms| json!({"type": "sleep", "payload": {"ms": ms}})).collect();
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    let mut expected: Vec<String> =
        batch["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    expected.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=300".to_owned();
    for _ in 0..10 {
        let (status, page) = system.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=300&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen, expected, "every job once, newest first, batch order kept");
}
