//! Workload 3: single `POST /v1/jobs` at a fixed open-loop rate.
//!
//! The schedule is kept by [`super::open_loop`], and latency is measured from
//! each request's *scheduled* time, so a stall in the API counts against every
//! request it delays (no coordinated omission). The first `warmup_secs` are
//! sent but not counted.

use std::time::{Duration, Instant};

use super::open_loop::{self, Schedule};
use crate::measure::LatencyRun;
use crate::ours::RunningApi;
use crate::procs::cpu_secs;
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;

/// One request's fate.
struct Outcome {
    scheduled: Instant,
    sent: Instant,
    done: Instant,
    ok: bool,
}

/// Sends `rate` requests per second for `warmup_secs + secs`.
pub async fn at_rate(
    api: &RunningApi,
    redis: &BenchRedis,
    token: &str,
    rate: u32,
    secs: f64,
    warmup_secs: f64,
    round: usize,
) -> anyhow::Result<LatencyRun> {
    let client = super::http_client()?;
    let url = format!("{}/v1/jobs", api.base);
    let body = serde_json::to_vec(&serde_json::json!({ "type": super::JOB_TYPE }))?;

    let mut conn = redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let cpu_before = cpu_secs(api.cpu)?;

    let schedule = Schedule::new(f64::from(rate), warmup_secs + secs);
    let start = schedule.start;
    let send = |scheduled: Instant| {
        let request =
            client.post(&url).bearer_auth(token).header("content-type", "application/json").body(body.clone());
        async move {
            let sent = Instant::now();
            let ok = match request.send().await {
                Ok(response) => {
                    let accepted = response.status() == reqwest::StatusCode::ACCEPTED;
                    response.bytes().await.is_ok() && accepted
                }
                Err(_) => false,
            };
            Outcome { scheduled, sent, done: Instant::now(), ok }
        }
    };
    let skipped = |scheduled: Instant| {
        let now = Instant::now();
        Outcome { scheduled, sent: now, done: now, ok: false }
    };
    let outcomes = open_loop::run(schedule, send, skipped).await?;
    let api_cpu = cpu_secs(api.cpu)? - cpu_before;
    let delta = before.delta(&RedisSample::read(&mut conn).await?);

    let counted_from = start + Duration::from_secs_f64(warmup_secs);
    let counted: Vec<&Outcome> = outcomes.iter().filter(|o| o.scheduled >= counted_from).collect();
    let mut latencies: Vec<f64> =
        counted.iter().filter(|o| o.ok).map(|o| o.done.duration_since(o.scheduled).as_secs_f64() * 1e3).collect();
    latencies.sort_by(f64::total_cmp);
    let mut lags: Vec<f64> = counted.iter().map(|o| o.sent.duration_since(o.scheduled).as_secs_f64() * 1e3).collect();
    lags.sort_by(f64::total_cmp);
    let requests = outcomes.len().max(1) as f64;
    Ok(LatencyRun {
        round,
        rate,
        secs,
        requests: counted.len() as u64,
        errors: counted.iter().filter(|o| !o.ok).count() as u64,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        send_lag_p99_ms: percentile(&lags, 0.99),
        redis_cpu_us_per_req: delta.cpu_secs * 1e6 / requests,
        redis_cmds_per_req: delta.total_calls() as f64 / requests,
        api_cpu_us_per_req: api_cpu * 1e6 / requests,
    })
}

/// Nearest-rank percentile of sorted values (0 when empty: then `errors` says why).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
