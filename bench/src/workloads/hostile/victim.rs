//! The victim of the hostile-tenant workload: single `noop` jobs at a fixed
//! open-loop rate, then each job's start read back over REST.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;

use super::{Tally, VICTIM_RATE, VictimFigures};
use crate::workloads::latency::percentile;
use crate::workloads::open_loop::{self, Schedule};

/// One victim job through, so the worker is up before anything is measured.
pub async fn warm_up(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    let posted = post_job(http, base, token).await;
    let id = posted.id.with_context(|| format!("the warm-up job got {}", posted.key))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if read_start(http, base, token, &id).await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the warm-up job did not start within 20 s")
}

/// One victim submission's fate.
pub struct Posted {
    scheduled: Instant,
    done: Instant,
    key: String,
    id: Option<String>,
}

/// The victim's open-loop submissions for `secs`.
pub async fn submit(http: &reqwest::Client, base: &str, token: &str, secs: f64) -> anyhow::Result<Vec<Posted>> {
    let send = |scheduled: Instant| {
        let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
        async move { Posted { scheduled, ..post_job(&http, &base, &token).await } }
    };
    let skipped = |scheduled: Instant| Posted { scheduled, done: Instant::now(), key: "not sent".into(), id: None };
    open_loop::run(Schedule::new(VICTIM_RATE, secs), send, skipped).await
}

async fn post_job(http: &reqwest::Client, base: &str, token: &str) -> Posted {
    let scheduled = Instant::now();
    let sent = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"type":"noop"}"#)
        .send()
        .await;
    let (key, id) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            match (status, body["id"].as_str(), body["code"].as_str()) {
                (202, Some(id), _) => ("202".to_owned(), Some(id.to_owned())),
                (_, _, Some(code)) => (format!("{status} {code}"), None),
                _ => (status.to_string(), None),
            }
        }
        Err(_) => ("transport error".to_owned(), None),
    };
    Posted { scheduled, done: Instant::now(), key, id }
}

/// `started_at − created_at` of a job, ms, once it has started.
async fn read_start(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Option<f64> {
    let response = http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(token).send().await.ok()?;
    let record: serde_json::Value = response.json().await.ok()?;
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(record[field].as_str()?).ok();
    let (created, started) = (at("created_at")?, at("started_at")?);
    Some((started - created).num_microseconds()? as f64 / 1e3)
}

/// Enqueue and start latencies; polls the jobs not yet started until `deadline`.
pub async fn figures(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    posted: Vec<Posted>,
    deadline: Instant,
) -> VictimFigures {
    let mut refused = Tally::default();
    let mut enqueue = Vec::new();
    let mut waiting = Vec::new();
    for p in &posted {
        match &p.id {
            Some(id) => {
                enqueue.push(p.done.saturating_duration_since(p.scheduled).as_secs_f64() * 1e3);
                waiting.push(id.clone());
            }
            None => refused.count(p.key.clone()),
        }
    }
    let accepted = waiting.len() as u64;
    let mut starts = Vec::new();
    loop {
        let reads = futures::stream::iter(waiting.iter().cloned())
            .map(|id| async move { (read_start(http, base, token, &id).await, id) })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        waiting.clear();
        for (start, id) in reads {
            match start {
                Some(ms) => starts.push(ms),
                None => waiting.push(id),
            }
        }
        if waiting.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    enqueue.sort_by(f64::total_cmp);
    starts.sort_by(f64::total_cmp);
    VictimFigures {
        sent: posted.len() as u64,
        accepted,
        refused,
        enqueue_p50_ms: percentile(&enqueue, 0.50),
        enqueue_p99_ms: percentile(&enqueue, 0.99),
        start_p50_ms: percentile(&starts, 0.50),
        start_p99_ms: percentile(&starts, 0.99),
        start_max_ms: starts.last().copied().unwrap_or(0.0),
        not_started: waiting.len() as u64,
    }
}
