//! A history checker in the spirit of Jepsen's queue checkers. 2,000 `email.send`
//! jobs go through three real worker processes while faults are injected at
//! random: workers paused (SIGSTOP) for up to twice their lease and resumed,
//! workers killed (-9) and restarted, Redis killed and restarted (AOF with
//! `appendfsync always`), Redis asleep (`DEBUG SLEEP`), every client connection
//! killed (`CLIENT KILL`), and clients cancelling and retrying jobs. Submissions
//! that get a 503 are retried with the same Idempotency-Key.
//!
//! Each job's side effect is a mail to a real SMTP server that holds its answer
//! a second (so runs overlap the pauses); the mail carries `X-Job-Id` and `X-Job-Run`, so the mailbox is the log
//! of every run that had an effect. The checker asserts, from that log and the
//! records: every job that got a 202 exists and ended (none is lost); every
//! recorded success came from the job's latest run, which held its lease, and
//! had its effect; no job ended `cancelled` that nobody cancelled; the counts
//! agree with a recount of the records; every job is in the listing. Duplicate
//! effects (allowed by at-least-once) are reported as a figure, with the faults
//! injected of each kind, in `target/reliability/history-checker.json`.
//!
//! `CHECKER_SEED` replays a run's fault schedule; the seed is printed.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::keys::Keys;
use shared::model::{JobStatus, Spec, State};
use shared::testkit::RedisServer;
use support::{System, TENANT, WorkerProcess};

const JOBS: usize = 2_000;
const WORKERS: usize = 3;
const FAULT_PHASE: Duration = Duration::from_secs(40);
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Faults {
    counts: BTreeMap<&'static str, u64>,
}

impl Faults {
    fn add(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }
}

/// Submits `JOBS` jobs in requests of 1–50, each with its own Idempotency-Key,
/// retrying a request that gets a 503 (or no answer) with the same key until it
/// is accepted. Adds the accepted ids to `accepted` as they come.
async fn submit_all(http: reqwest::Client, base: String, seed: u64, accepted: Arc<Mutex<Vec<String>>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut request = 0;
    let mut total = 0;
    while total < JOBS {
        let n = rng.random_range(1..=50).min(JOBS - total);
        let jobs: Vec<Value> = (0..n)
            .map(|i| {
                json!({"type": "email.send", "max_attempts": 10, "timeout_ms": 10_000, "backoff_base_ms": 100,
                       "backoff_cap_ms": 1_000,
                       "payload": {"to": format!("user{}@example.org", total + i), "subject": "s", "text": "t"}})
            })
            .collect();
        let key = format!("checker-{request}");
        request += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "request {key} was never accepted");
            let sent =
                http.post(format!("{base}/v1/jobs/batch")).header("Idempotency-Key", &key).json(&json!({"jobs": jobs}));
            match sent.send().await {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    let body: Value = response.json().await.expect("ids");
                    let ids = body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned());
                    accepted.lock().unwrap().extend(ids);
                    total += n;
                    break;
                }
                Ok(response) => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // About 60 jobs a second, under the workers' capacity (96 a second), so
        // that a job taken back runs again soon, while its first run may still go on.
        tokio::time::sleep(Duration::from_millis(16 * n as u64)).await;
    }
}

/// The state header and the result of every id that has a record.
async fn records(system: &System, ids: &[String]) -> HashMap<String, (State, Option<Value>)> {
    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let states: Vec<Option<String>> =
            redis::cmd("HMGET").arg(keys.state()).arg(chunk).query_async(&mut conn).await.unwrap();
        let results: Vec<Option<String>> =
            redis::cmd("HMGET").arg(keys.result()).arg(chunk).query_async(&mut conn).await.unwrap();
        for ((id, state), result) in chunk.iter().zip(states).zip(results) {
            if let Some(state) = state {
                let header = State::parse(state.lines().next().unwrap()).expect("a state header");
                found.insert(id.clone(), (header, result.map(|r| serde_json::from_str(&r).unwrap())));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_random_faults_no_job_is_lost_and_every_outcome_is_its_latest_runs() {
    let seed = std::env::var("CHECKER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("history checker: CHECKER_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut system = System::start_on(RedisServer::start_with_args(&["--appendfsync", "always"]), |_| {}).await;
    system.smtp.set_reply_delay(Duration::from_millis(1000));
    let env = [("CONCURRENCY", "32")];
    let mut workers: Vec<WorkerProcess> = (0..WORKERS).map(|_| system.spawn_worker_process(&env)).collect();
    let mut paused: Vec<Option<Instant>> = vec![None; WORKERS];
    let mut faults = Faults::default();
    let cancelled: Arc<Mutex<HashSet<String>>> = Arc::default();

    let submitted: Arc<Mutex<Vec<String>>> = Arc::default();
    let submitter = tokio::spawn(submit_all(system.http.clone(), system.base.clone(), seed, submitted.clone()));
    let started = Instant::now();
    while started.elapsed() < FAULT_PHASE {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..800))).await;
        for (i, until) in paused.iter_mut().enumerate() {
            if until.is_some_and(|t| Instant::now() >= t) {
                workers[i].resume();
                *until = None;
            }
        }
        let known = submitted.lock().unwrap().clone();
        let w = rng.random_range(0..WORKERS);
        match rng.random_range(0..100) {
            0..22 if paused[w].is_none() => {
                workers[w].pause();
                paused[w] = Some(Instant::now() + Duration::from_millis(rng.random_range(500..4_000)));
                faults.add("worker paused (SIGSTOP, 0.5-4 s; lease 2 s)");
            }
            22..36 => {
                workers[w].kill();
                workers[w] = system.spawn_worker_process(&env);
                paused[w] = None;
                faults.add("worker killed (-9) and restarted");
            }
            36..44 => {
                system.redis.restart();
                faults.add("redis killed (-9) and restarted");
            }
            44..54 => {
                let mut conn = system.redis_conn().await;
                let secs = rng.random_range(1..=3);
                tokio::spawn(async move {
                    let _: redis::RedisResult<()> =
                        redis::cmd("DEBUG").arg("SLEEP").arg(secs).query_async(&mut conn).await;
                });
                faults.add("redis asleep (DEBUG SLEEP 1-3 s)");
            }
            54..62 => {
                let mut conn = system.redis_conn().await;
                let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
                    .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
                    .query_async(&mut conn)
                    .await;
                faults.add("every client connection killed (CLIENT KILL)");
            }
            62..82 if !known.is_empty() => {
                let id = known[rng.random_range(0..known.len())].clone();
                let (status, body, _) = system.post(&format!("/v1/jobs/{id}/cancel"), &json!({}), &[]).await;
                // A cancel whose reply was lost (`outcome_unknown`) may have taken
                // effect, as the answer says: the job may then end cancelled.
                if status.is_success() || body["code"] == "outcome_unknown" {
                    cancelled.lock().unwrap().insert(id);
                    faults.add("job cancelled by a client");
                }
            }
            82..100 if !known.is_empty() => {
                // Mostly jobs a client cancelled: they may have ended, and run again.
                let cancelled: Vec<String> = cancelled.lock().unwrap().iter().cloned().collect();
                let id = if !cancelled.is_empty() && rng.random_bool(0.7) {
                    cancelled[rng.random_range(0..cancelled.len())].clone()
                } else {
                    known[rng.random_range(0..known.len())].clone()
                };
                let (status, _, _) = system.post(&format!("/v1/jobs/{id}/retry"), &json!({}), &[]).await;
                if status.is_success() {
                    faults.add("finished job retried by a client");
                }
            }
            _ => {}
        }
    }
    for (worker, until) in workers.iter().zip(&paused) {
        if until.is_some() {
            worker.resume();
        }
    }
    tokio::time::timeout(Duration::from_secs(60), submitter).await.expect("submissions end").unwrap();
    let accepted = submitted.lock().unwrap().clone();
    assert_eq!(accepted.len(), JOBS);

    // Quiet now: every accepted job must reach an end.
    let deadline = Instant::now() + SETTLE_WITHIN;
    let records = loop {
        let records = records(&system, &accepted).await;
        let live = records.values().filter(|(state, _)| !state.status.is_terminal()).count();
        if (live == 0 && records.len() == accepted.len()) || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let lost: Vec<&String> = accepted.iter().filter(|id| !records.contains_key(*id)).collect();
    let unfinished: Vec<&String> =
        records.iter().filter(|(_, (s, _))| !s.status.is_terminal()).map(|(id, _)| id).collect();

    // The log of effects: which runs of which job sent their mail.
    let mut effects: HashMap<String, Vec<u64>> = HashMap::new();
    for mail in system.smtp.messages() {
        let id = mail.header("X-Job-Id").expect("X-Job-Id");
        effects.entry(id).or_default().push(mail.header("X-Job-Run").expect("X-Job-Run").parse().unwrap());
    }
    let cancelled = cancelled.lock().unwrap().clone();
    let mut wrong: Vec<String> = Vec::new();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, (state, result)) in &records {
        *by_status.entry(state.status.as_str()).or_default() += 1;
        let runs = effects.get(id).cloned().unwrap_or_default();
        match state.status {
            JobStatus::Succeeded => {
                let run = result.as_ref().and_then(|r| r["run"].as_u64());
                if run != Some(state.runs) {
                    wrong.push(format!(
                        "{id}: succeeded with the outcome of run {run:?}, its latest run is {}",
                        state.runs
                    ));
                } else if !runs.contains(&state.runs) {
                    wrong.push(format!("{id}: succeeded by run {}, which sent no mail (sent: {runs:?})", state.runs));
                }
                if runs.iter().any(|r| *r > state.runs) {
                    wrong.push(format!("{id}: a run after the recorded one had an effect: {runs:?}"));
                }
            }
            JobStatus::Cancelled if !cancelled.contains(id) => {
                wrong.push(format!("{id}: cancelled, but nobody cancelled it"))
            }
            _ => {}
        }
        if state.attempts > 10 {
            wrong.push(format!("{id}: {} attempts, more than its 10", state.attempts));
        }
    }
    let duplicates: u64 = effects.values().map(|runs| runs.len().saturating_sub(1) as u64).sum();
    let duplicated_jobs = effects.values().filter(|runs| runs.len() > 1).count();

    // Counts and the listing, against the records themselves.
    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    let specs: HashMap<String, String> = conn.hgetall(keys.spec()).await.unwrap();
    let mut recount: HashMap<String, i64> = HashMap::new();
    for (id, (state, _)) in &records {
        let queue = Spec::parse(&specs[id]).unwrap().queue;
        *recount.entry(format!("{queue}\t{}", state.status)).or_default() += 1;
    }
    let mut counts: HashMap<String, i64> = conn.hgetall(keys.tenant_counts(TENANT)).await.unwrap();
    counts.retain(|_, n| *n != 0);
    let drift: Vec<String> = recount
        .keys()
        .chain(counts.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|field| counts.get(*field) != recount.get(*field))
        .map(|field| format!("{field}: kept {:?}, recount {:?}", counts.get(field), recount.get(field)))
        .collect();
    let listed: HashSet<String> =
        conn.zrange::<_, Vec<String>>(keys.tenant_jobs(TENANT), 0, -1).await.unwrap().into_iter().collect();
    let unlisted = accepted.iter().filter(|id| !listed.contains(*id)).count();

    let report = json!({
        "seed": seed,
        "jobs_accepted": accepted.len(),
        "faults": faults.counts,
        "final_status": by_status,
        "lost": lost.len(),
        "unfinished": unfinished.len(),
        "wrong_outcomes": wrong.len(),
        "count_drift": drift.len(),
        "unlisted": unlisted,
        "mails_sent": effects.values().map(Vec::len).sum::<usize>(),
        "duplicate_effects": duplicates,
        "jobs_with_duplicate_effects": duplicated_jobs,
        "took_secs": started.elapsed().as_secs(),
    });
    eprintln!("history checker: {}", serde_json::to_string_pretty(&report).unwrap());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history-checker.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();

    assert!(lost.is_empty(), "accepted jobs without a record: {lost:?}");
    assert!(unfinished.is_empty(), "jobs still live after {SETTLE_WITHIN:?} of quiet: {unfinished:?}");
    assert!(wrong.is_empty(), "wrong outcomes:\n{}", wrong.join("\n"));
    assert!(drift.is_empty(), "counts that disagree with the records:\n{}", drift.join("\n"));
    assert_eq!(unlisted, 0, "accepted jobs missing from the listing");
    assert!(faults.counts.values().sum::<u64>() >= 20, "too few faults injected: {:?}", faults.counts);
}
