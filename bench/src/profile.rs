//! Which scripts dominate Redis CPU: runs our HTTP enqueue and processing once
//! with `SLOWLOG` recording every command (threshold 0), then sums the Redis
//! execution time of each top-level call by script. Recording every command
//! slows Redis down, so these are shares, not throughput figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;

use crate::auth;
use crate::ours::Ours;
use crate::redis_server::BenchRedis;
use crate::redis_stats::RedisSample;
use crate::run::Plan;
use crate::workloads::{enqueue, latency, process};

const SINGLE: &str = "enqueue, single POST /v1/jobs (1,000/s for 2 s)";
const BATCH: &str = "enqueue, HTTP batches";
const PROCESS: &str = "processing";
const SINGLE_RATE: u32 = 1000;
const SINGLE_SECS: f64 = 2.0;

/// Most SLOWLOG entries kept; far above the calls of one profile run.
const SLOWLOG_LEN: u64 = 2_000_000;

pub async fn run(plan: &Plan) -> anyhow::Result<String> {
    let redis = BenchRedis::start(plan.persistence, plan.pinning.redis_cpu).await?;
    let ours = Ours::for_plan(plan, redis.url());
    let token = auth::token_for(ours.api_binary().as_deref(), &ours.jwt_secret)?;
    let tokens = if plan.params.tenants > 1 {
        auth::tokens(&ours.jwt_secret, &auth::tenants(plan.params.tenants))?
    } else {
        vec![token.clone()]
    };
    let mut conn = redis.connect().await?;
    let mut text = String::new();
    let _ = writeln!(text, "# Redis time per script call, {} jobs (SLOWLOG, threshold 0)\n", plan.params.jobs);
    for phase in [SINGLE, BATCH, PROCESS] {
        if phase != PROCESS {
            redis.flush().await?;
        }
        let api = if phase == PROCESS { None } else { Some(ours.start_api().await?) };
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .arg("slowlog-max-len")
            .arg(SLOWLOG_LEN)
            .query_async(&mut conn)
            .await?;
        let () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn).await?;
        let before = RedisSample::read(&mut conn).await?;
        let (measured, jobs) = match (phase, &api) {
            (SINGLE, Some(api)) => {
                let run = latency::at_rate(api, &redis, &token, SINGLE_RATE, SINGLE_SECS, 0.0, 0).await;
                (run.map(drop), u64::from(SINGLE_RATE) * SINGLE_SECS as u64)
            }
            (BATCH, Some(api)) => {
                (enqueue::http(api, &redis, &tokens, &plan.params, 0).await.map(drop), plan.params.jobs)
            }
            _ => (process::drain(&ours, &redis, &plan.params, 0).await.map(drop), plan.params.jobs),
        };
        if let Some(api) = api {
            api.stop().await;
        }
        measured?;
        let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(&mut conn).await?;
        let delta = before.delta(&RedisSample::read(&mut conn).await?);
        let () =
            redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(10_000).query_async(&mut conn).await?;
        table(&mut text, phase, &entries, jobs)?;
        let mut inner: Vec<(&String, &(u64, u64))> = delta.commands.iter().collect();
        inner.sort_by_key(|entry| std::cmp::Reverse(entry.1.1));
        let _ = writeln!(
            text,
            "Commands by Redis time (INFO commandstats; script bodies count under EVALSHA and again under each inner command):\n"
        );
        for (name, (calls, usec)) in inner.iter().take(12) {
            let _ = writeln!(
                text,
                "- {name}: {calls} calls, {:.2} per job, {:.2} µs/job",
                *calls as f64 / jobs as f64,
                *usec as f64 / jobs as f64
            );
        }
        text.push('\n');
    }
    Ok(text)
}

/// Script name by SHA-1, for every script the system loads.
fn script_names() -> BTreeMap<String, &'static str> {
    use shared::scripts::*;
    [
        (&ENQUEUE, "ENQUEUE"),
        (&CLAIM, "CLAIM"),
        (&ACK, "ACK"),
        (&HEARTBEAT, "HEARTBEAT"),
        (&REAP, "REAP"),
        (&RELEASE, "RELEASE"),
        (&CANCEL, "CANCEL"),
        (&RETRY, "RETRY"),
        (&RETRY_FAILED, "RETRY_FAILED"),
        (&READ, "READ"),
    ]
    .into_iter()
    .map(|(script, name)| (script.get_hash().to_owned(), name))
    .collect()
}

fn table(text: &mut String, phase: &str, entries: &[redis::Value], jobs: u64) -> anyhow::Result<()> {
    let names = script_names();
    // call → (count, µs)
    let mut calls: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for entry in entries {
        let fields: Vec<redis::Value> = redis::from_redis_value(entry.clone()).context("bad SLOWLOG entry")?;
        let micros: u64 = redis::from_redis_value(fields.get(2).cloned().context("SLOWLOG entry lacks a duration")?)?;
        let args: Vec<String> = redis::from_redis_value(fields.get(3).cloned().context("SLOWLOG entry lacks args")?)?;
        let command = args.first().map(|c| c.to_ascii_lowercase()).unwrap_or_default();
        let name = match command.as_str() {
            "evalsha" => {
                let sha = args.get(1).cloned().unwrap_or_default();
                names.get(&sha).map_or_else(|| format!("EVALSHA {sha}"), |n| format!("EVALSHA {n}"))
            }
            // The harness's own calls: reading this log, progress polls, the final count.
            "slowlog" | "info" | "config" | "hscan" | "llen" | "hlen" | "zcard" => continue,
            other => other.to_owned(),
        };
        let slot = calls.entry(name).or_default();
        slot.0 += 1;
        slot.1 += micros;
    }
    // Only script calls are top level: SLOWLOG also lists the commands run inside them.
    let total: u64 = calls.iter().filter(|(name, _)| name.starts_with("EVALSHA")).map(|(_, (_, us))| us).sum();
    let _ = writeln!(
        text,
        "## {phase}\n\nA script's time includes the commands it runs, which are listed again below it.\n\n\
             | call | calls | µs/call | µs/job | share of script time |\n|---|---:|---:|---:|---:|"
    );
    let mut rows: Vec<(String, (u64, u64))> = calls.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.1));
    rows.sort_by_key(|row| !row.0.starts_with("EVALSHA"));
    for (name, (count, micros)) in rows {
        let share = if name.starts_with("EVALSHA") {
            format!("{:.1}%", 100.0 * micros as f64 / total.max(1) as f64)
        } else {
            "(inside)".to_owned()
        };
        let _ = writeln!(
            text,
            "| {name} | {count} | {:.1} | {:.3} | {share} |",
            micros as f64 / count as f64,
            micros as f64 / jobs as f64,
        );
    }
    text.push('\n');
    Ok(())
}
