//! Queue-wide commands: `stats` (counts, latency, workers) and `retry-failed`.

use std::time::Duration;

use serde_json::Value;

use super::client::Client;
use super::failure::Failure;
use super::print::{Table, cell, progress};
use super::{RetryFailedArgs, StatsArgs};

const STATUSES: [&str; 7] = ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"];

/// Waits after 429 in a row before `retry-failed` gives up on a queue.
const MAX_RATE_LIMITED_WAITS: u32 = 100;
/// Longest single wait we accept from `Retry-After`.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `jobs stats`: a table of queues and, for an operator, of workers.
pub async fn stats(client: &Client, _args: &StatsArgs) -> Result<(), Failure> {
    let answer = client.get(&["v1", "queues"], &[]).await?;
    if client.json {
        println!("{}", answer.body.trim_end());
        return Ok(());
    }
    let overview = answer.json()?;
    println!("{}", render(&overview));
    Ok(())
}

fn render(overview: &Value) -> String {
    let queues = overview.get("queues").and_then(Value::as_array).cloned().unwrap_or_default();
    let with_latency = queues.iter().any(|queue| queue.get("latency_ms").is_some_and(|v| !v.is_null()));
    let mut headers =
        vec!["QUEUE", "QUEUED>", "SCHEDULED>", "RUNNING>", "RETRYING>", "SUCCEEDED>", "FAILED>", "CANCELLED>"];
    if with_latency {
        headers.push("LATENCY_MS>");
    }
    let mut table = Table::new(&headers);
    for queue in &queues {
        let mut cells = vec![queue.get("name").map(cell).unwrap_or_default()];
        cells.extend(STATUSES.iter().map(|status| queue.get(*status).map(cell).unwrap_or_else(|| "0".into())));
        if with_latency {
            cells.push(queue.get("latency_ms").map(cell).unwrap_or_else(|| "-".into()));
        }
        table.row(cells);
    }
    let mut out = if queues.is_empty() { "no queues yet".to_owned() } else { table.render() };
    if let Some(workers) = overview.get("workers").and_then(Value::as_array) {
        let mut table = Table::new(&["WORKER", "HOST", "PID>", "QUEUES", "CONCURRENCY>", "STARTED", "LAST_HEARTBEAT"]);
        for worker in workers {
            let text = |name: &str| worker.get(name).map(cell).unwrap_or_else(|| "-".to_owned());
            let served: Vec<String> =
                worker.get("queues").and_then(Value::as_array).into_iter().flatten().map(cell).collect();
            let served = if served.is_empty() { "all".to_owned() } else { served.join(",") };
            let row = vec![text("id"), text("host"), text("pid"), served, text("concurrency")];
            table.row(row.into_iter().chain([text("started_at"), text("last_heartbeat")]).collect());
        }
        out.push_str("\n\n");
        out.push_str(&if workers.is_empty() { "no live workers".to_owned() } else { table.render() });
    }
    out
}

/// `jobs retry-failed QUEUE`: calls the API until it says nothing more is left, or
/// until as many jobs were retried as had failed when it started: a job that fails again
/// meanwhile (a worker still failing them fast) is not retried in a loop.
pub async fn retry_failed(client: &Client, args: &RetryFailedArgs) -> Result<(), Failure> {
    let failed = failed_count(client, &args.queue).await?;
    let bar = progress(failed, "jobs retried");
    let (mut retried, mut calls, mut waits, mut waits_in_a_row) = (0u64, 0u64, 0u64, 0u32);
    let segments = ["v1", "queues", args.queue.as_str(), "retry-failed"];
    loop {
        // With no count to go by (0: perhaps not counted yet), one full call decides.
        let left = if failed > 0 { failed.saturating_sub(retried) } else { u64::from(args.limit) };
        let limit = [("limit", left.min(u64::from(args.limit)).to_string())];
        let answer = match client.post(&segments, &limit, None, None).await {
            Ok(answer) => answer,
            Err(failure) if failure.is_api(429, &["rate_limited"]) && waits_in_a_row < MAX_RATE_LIMITED_WAITS => {
                let wait = failure.retry_after().unwrap_or(Duration::from_secs(1)).min(MAX_WAIT);
                bar.set_message(format!("(rate limited: waiting {}s)", wait.as_secs()));
                tokio::time::sleep(wait).await;
                bar.set_message("");
                waits += 1;
                waits_in_a_row += 1;
                continue;
            }
            Err(failure) => {
                bar.abandon();
                eprintln!("{retried} jobs retried on queue {} before this error", args.queue);
                return Err(failure);
            }
        };
        waits_in_a_row = 0;
        calls += 1;
        if client.json {
            bar.suspend(|| println!("{}", answer.body.trim_end()));
        }
        let reply = answer.json()?;
        let now = reply.get("retried").and_then(Value::as_u64).unwrap_or(0);
        retried += now;
        bar.set_position(retried);
        let more = reply.get("more").and_then(Value::as_bool).unwrap_or(false);
        // `more` with nothing retried would loop forever on a confused answer.
        if !more || now == 0 || (failed > 0 && retried >= failed) {
            break;
        }
    }
    bar.finish_and_clear();
    let mut summary = format!("{retried} jobs retried on queue {} in {calls} calls", args.queue);
    if waits > 0 {
        summary.push_str(&format!(", {waits} waits after 429"));
    }
    if client.json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    Ok(())
}

/// The queue's failed count now: the progress bar's length (it may grow meanwhile).
async fn failed_count(client: &Client, queue: &str) -> Result<u64, Failure> {
    let overview = client.get(&["v1", "queues"], &[]).await?.json()?;
    let queues = overview.get("queues").and_then(Value::as_array).cloned().unwrap_or_default();
    let failed = queues.iter().find(|entry| entry.get("name").and_then(Value::as_str) == Some(queue));
    Ok(failed.and_then(|entry| entry.get("failed")).and_then(Value::as_u64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_show_latency_and_workers_only_when_the_api_sent_them() {
        let tenant = serde_json::json!({"queues":[{"name":"email","queued":3,"failed":1}]});
        let text = render(&tenant);
        assert!(!text.contains("LATENCY") && !text.contains("WORKER"), "{text}");
        assert!(text.lines().nth(1).is_some_and(|line| line.starts_with("email") && line.contains(" 3 ")), "{text}");
        let operator = serde_json::json!({"queues":[{"name":"email","queued":0,"latency_ms":12}],
            "workers":[{"id":"w1","host":"vm","pid":7,"queues":[],"concurrency":32,"started_at":"t0",
            "last_heartbeat":"t1"}]});
        let text = render(&operator);
        assert!(text.contains("LATENCY_MS") && text.contains("WORKER"), "{text}");
        assert!(text.lines().last().is_some_and(|line| line.starts_with("w1") && line.contains(" all ")), "{text}");
    }
}
