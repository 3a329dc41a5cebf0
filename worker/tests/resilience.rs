//! Crashes and outages: kill -9 of a worker mid-job, SIGTERM drains, a job that
//! kills its worker every time, Redis killed and restarted mid-run.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::model::{JobStatus, State};
use support::{System, eventually};

fn statuses(history: &[Value]) -> Vec<String> {
    history.iter().map(|e| e["status"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_job_whose_worker_is_killed_completes_on_another_worker_with_attempts_2() {
    let system = System::start().await;
    let mut doomed = system.spawn_worker_process(&[]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 1500}})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    doomed.kill();

    let _rescuer = system.spawn_worker_process(&[]);
    let record = system.wait_for_status(&id, "succeeded", Duration::from_secs(15)).await;
    assert_eq!(record["attempts"], 2);
    let history = system.history(&id).await;
    assert_eq!(statuses(&history), ["queued", "running", "queued", "running", "succeeded"]);
    assert!(history[2]["error"].as_str().unwrap().contains("lease expired"));

    // The leases hash is a hash table, and what the reaper left in it is its pin.
    let running = shared::keys::Keys::new(&system.prefix).running("default");
    let mut conn = system.redis_conn().await;
    let encoding: String = redis::cmd("OBJECT").arg("ENCODING").arg(&running).query_async(&mut conn).await.unwrap();
    assert_eq!(encoding, "hashtable");
    let leases: HashMap<String, String> = redis::cmd("HGETALL").arg(&running).query_async(&mut conn).await.unwrap();
    assert_eq!(leases.keys().collect::<Vec<_>>(), [shared::keys::RUNNING_PIN], "{leases:?}");
}

#[tokio::test]
async fn sigterm_finishes_running_jobs_leaves_the_rest_queued_and_exits_0() {
    let system = System::start().await;
    // Four slots: a claim takes only as many jobs as there are free slots.
    let mut worker = system.spawn_worker_process(&[("CONCURRENCY", "4"), ("CLAIM_BATCH", "8")]);
    let jobs: Vec<Value> = (0..12).map(|_| json!({"type": "sleep", "payload": {"ms": 1000}})).collect();
    let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    let ids: Vec<String> = batch["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    eventually(Duration::from_secs(10), "four jobs running", || async {
        let (_, running) = system.get("/v1/jobs?status=running").await;
        (running["jobs"].as_array().unwrap().len() == 4).then_some(())
    })
    .await;

    let exit = worker.terminate(Duration::from_secs(10)).expect("worker exits within its grace period");
    assert!(exit.success(), "exit status {exit:?}");
    let mut finished = 0;
    let mut waiting = 0;
    for id in &ids {
        let record = system.job(id).await;
        match record["status"].as_str().unwrap() {
            "succeeded" => finished += 1,
            "queued" => {
                assert_eq!(record["attempts"], 0, "a job left queued has used no attempt");
                waiting += 1;
            }
            other => panic!("job {id} left {other} after the drain: {record}"),
        }
    }
    assert_eq!((finished, waiting), (4, 8), "the running jobs finished; nothing else was taken");

    let _next = system.spawn_worker_process(&[]);
    for id in &ids {
        let record = system.wait_for_status(id, "succeeded", Duration::from_secs(15)).await;
        assert_eq!(record["attempts"], 1, "nothing ran twice");
    }
}

#[tokio::test]
async fn jobs_still_running_when_the_grace_period_ends_are_handed_back() {
    let system = System::start().await;
    let mut worker = system.spawn_worker_process(&[("SHUTDOWN_GRACE_SECS", "1")]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 30_000}})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    let started = std::time::Instant::now();
    let exit = worker.terminate(Duration::from_secs(10)).expect("worker exits");
    assert!(exit.success());
    assert!(started.elapsed() < Duration::from_secs(5), "exited {:?} after SIGTERM", started.elapsed());
    let record = system.job(&id).await;
    assert_eq!((record["status"].as_str(), record["attempts"].as_u64()), (Some("queued"), Some(0)));
}

#[tokio::test]
async fn a_job_that_kills_its_worker_every_time_ends_failed() {
    let system = System::start().await;
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 60_000}, "max_attempts": 2})).await;
    for attempt in 1..=2u64 {
        let mut worker = system.spawn_worker_process(&[]);
        eventually(Duration::from_secs(15), "the job running again", || async {
            let record = system.job(&id).await;
            (record["status"] == "running" && record["attempts"] == attempt).then_some(())
        })
        .await;
        worker.kill();
    }
    let _last = system.spawn_worker_process(&[]);
    let record = system.wait_for_status(&id, "failed", Duration::from_secs(15)).await;
    assert_eq!(record["attempts"], 2);
    assert!(record["last_error"].as_str().unwrap().contains("lease expired"));
}

#[tokio::test]
async fn redis_killed_mid_run_gives_503s_then_recovers_and_loses_no_accepted_job() {
    let mut system = System::start().await;
    let mut worker = system.spawn_worker_process(&[]);
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let unexpected: Arc<Mutex<Vec<u16>>> = Arc::default();

    let (http, url) = (system.http.clone(), system.url("/v1/jobs"));
    let submit_round = |n: usize| {
        let (http, url) = (http.clone(), url.clone());
        let (accepted, refused, unexpected) = (accepted.clone(), refused.clone(), unexpected.clone());
        async move {
            for _ in 0..n {
                let response = http.post(&url).json(&json!({"type": "sleep", "payload": {"ms": 5}})).send().await;
                match response {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let body: Value = r.json().await.unwrap();
                        accepted.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        // Refused, or (a request in flight as Redis died) its fate unknown.
                        let body: Value = r.json().await.unwrap();
                        assert!(["unavailable", "outcome_unknown"].contains(&body["code"].as_str().unwrap()), "{body}");
                        *refused.lock().unwrap() += 1;
                    }
                    Ok(r) => unexpected.lock().unwrap().push(r.status().as_u16()),
                    Err(err) => panic!("request failed outright: {err}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    submit_round(50).await;
    system.redis.kill();
    submit_round(20).await;
    let (ready, _) = system.get("/readyz").await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(system.get("/healthz").await.0, StatusCode::OK);
    system.redis.restart();
    eventually(Duration::from_secs(20), "the API serving again", || async {
        (system.get("/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    submit_round(50).await;

    assert!(unexpected.lock().unwrap().is_empty(), "only 202 or 503: {:?}", unexpected.lock().unwrap());
    assert!(*refused.lock().unwrap() >= 20, "every request during the outage got a 503");
    let ids = accepted.lock().unwrap().clone();
    assert!(ids.len() >= 100, "accepted {}", ids.len());
    for id in &ids {
        system.wait_for_status(id, "succeeded", Duration::from_secs(30)).await;
    }
    assert!(worker.is_running(), "the worker survived the outage");
}

#[tokio::test]
async fn a_hung_redis_gives_a_prompt_503_and_service_resumes_when_it_wakes() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let before = system.submit(json!({"type": "noop"})).await;
    system.wait_for_status(&before, "succeeded", Duration::from_secs(10)).await;

    let pid = system.redis.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let started = std::time::Instant::now();
    let (status, body, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
    let waited = started.elapsed();
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    // The script was sent: Redis runs it once it wakes, so its fate was unknown.
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("outcome_unknown")));
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");

    let after = eventually(Duration::from_secs(15), "the API accepting jobs again", || async {
        let (status, record, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
        (status == StatusCode::ACCEPTED).then(|| record["id"].as_str().unwrap().to_owned())
    })
    .await;
    system.wait_for_status(&after, "succeeded", Duration::from_secs(15)).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_api_started_while_redis_is_down_answers_503_then_serves_once_it_is_up() {
    let mut system = System::start().await;
    system.redis.kill();
    let late = system.start_another_api().await;
    let health = system.http.get(format!("{late}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process is up");
    let post = |base: String| {
        let http = system.http.clone();
        async move {
            let response = http.post(format!("{base}/v1/jobs")).json(&json!({"type": "noop"})).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(late.clone()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
    let ready = system.http.get(format!("{late}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    system.redis.restart();
    let id = eventually(Duration::from_secs(20), "the late API to accept jobs", || async {
        let (status, body) = post(late.clone()).await;
        (status == StatusCode::ACCEPTED).then(|| body["id"].as_str().unwrap().to_owned())
    })
    .await;
    let worker = system.spawn_worker();
    system.wait_for_status(&id, "succeeded", Duration::from_secs(15)).await;
    worker.shutdown().await.unwrap();
}

/// Attempts of every job record, read straight from the state column.
async fn attempts_by_status(system: &System) -> HashMap<(JobStatus, u32), usize> {
    let key = shared::keys::Keys::new(&system.prefix).state();
    let mut conn = system.redis_conn().await;
    let mut tally = HashMap::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, fields): (String, Vec<String>) =
            redis::cmd("HSCAN").arg(&key).arg(&cursor).arg("COUNT").arg(1000).query_async(&mut conn).await.unwrap();
        for value in fields.iter().skip(1).step_by(2) {
            let state = State::parse(value.lines().next().unwrap()).expect("a state header");
            *tally.entry((state.status, state.attempts)).or_default() += 1;
        }
        if next == "0" {
            return tally;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn sigterm_while_claiming_ahead_hands_back_every_unstarted_job() {
    let system = System::start().await;
    let total = 20_000;
    for _ in 0..total / 1000 {
        let (status, _, _) =
            system.post("/v1/jobs/batch", &json!({"jobs": vec![json!({"type": "noop"}); 1000]}), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let addr = format!("127.0.0.1:{}", shared::testkit::free_port());
    let mut worker = system.spawn_worker_process(&[("METRICS_ADDR", &addr), ("CONCURRENCY", "50")]);
    eventually(Duration::from_secs(20), "the worker claiming ahead", || async {
        let page = system.http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        page.lines().any(|line| line.starts_with("jobs_claimed_ahead_total")).then_some(())
    })
    .await;
    let exit = worker.terminate(Duration::from_secs(10)).expect("worker exits within its grace period");
    assert!(exit.success(), "exit status {exit:?}");

    // Every job either ran once or is back in the queue with no attempt used.
    let tally = attempts_by_status(&system).await;
    let succeeded = tally.get(&(JobStatus::Succeeded, 1)).copied().unwrap_or(0);
    let queued = tally.get(&(JobStatus::Queued, 0)).copied().unwrap_or(0);
    assert_eq!(succeeded + queued, total, "{tally:?}");
    assert!(queued > 0, "the worker was stopped before the queue drained: {tally:?}");
    let running = shared::keys::Keys::new(&system.prefix).running("default");
    let leases: HashMap<String, String> =
        redis::cmd("HGETALL").arg(&running).query_async(&mut system.redis_conn().await).await.unwrap();
    assert_eq!(leases.len(), 1, "only the pin is left: {leases:?}");

    let _next = system.spawn_worker_process(&[]);
    eventually(Duration::from_secs(60), "every job succeeded once", || async {
        let tally = attempts_by_status(&system).await;
        (tally.get(&(JobStatus::Succeeded, 1)) == Some(&total)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn workers_killed_over_and_over_lose_no_job() {
    let system = System::start().await;
    let jobs: Vec<Value> = (0..1000).map(|_| json!({"type": "sleep", "payload": {"ms": 20}})).collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(500) {
        let (_, batch, _) = system.post("/v1/jobs/batch", &json!({"jobs": chunk}), &[]).await;
        ids.extend(batch["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    let env = [("CONCURRENCY", "16")];
    let mut workers = [system.spawn_worker_process(&env), system.spawn_worker_process(&env)];
    // Kill one worker mid-run every 300 ms, eight times, starting a fresh one each time.
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        workers[round % 2].kill();
        workers[round % 2] = system.spawn_worker_process(&env);
    }
    let mut reran = 0;
    for id in &ids {
        let record = system.wait_for_status(id, "succeeded", Duration::from_secs(60)).await;
        let attempts = record["attempts"].as_u64().unwrap();
        assert!(attempts <= 5, "{record}");
        if attempts > 1 {
            reran += 1;
        }
    }
    // At-least-once: jobs running when their worker died ran again; none was lost.
    assert!(reran > 0 && reran <= 8 * 16, "{reran} jobs ran more than once");
}

#[tokio::test]
async fn a_second_sigterm_stops_a_draining_worker_at_once() {
    let system = System::start().await;
    let mut worker = system.spawn_worker_process(&[("SHUTDOWN_GRACE_SECS", "60")]);
    let id = system.submit(json!({"type": "sleep", "payload": {"ms": 60_000}})).await;
    system.wait_for_status(&id, "running", Duration::from_secs(10)).await;
    assert!(worker.terminate(Duration::from_millis(500)).is_none(), "the first signal starts a drain");
    let exit = worker.terminate(Duration::from_secs(5)).expect("the second signal ends the process");
    assert_eq!(exit.code(), Some(130));
    // The abandoned job is taken back once its lease expires.
    let _rescuer = system.spawn_worker_process(&[]);
    eventually(Duration::from_secs(15), "the job to run again", || async {
        let record = system.job(&id).await;
        (record["status"] == "running" && record["attempts"] == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_full_redis_gives_503_and_nothing_is_half_written() {
    let system = System::start().await;
    let mut conn = system.redis_conn().await;
    let used: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    let used: u64 = used.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    // No room left: with noeviction, Redis refuses every write.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used / 2).query_async(&mut conn).await.unwrap();
    let (status, body, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("storage_full")), "{body}");
    let (_, list) = system.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "nothing was stored");

    // Room again: admission reads Redis's memory every 500 ms, so it lets jobs in within that.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut conn).await.unwrap();
    eventually(Duration::from_secs(5), "jobs admitted again", || async {
        let (status, _, _) = system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
}
