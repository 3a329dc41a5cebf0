//! Workload 6, fan-out: N WebSocket subscribers of one tenant, each following
//! all of the tenant's jobs (so every event goes to every subscriber), while
//! jobs go through at a fixed rate — single `POST /v1/jobs`, open loop, one
//! worker running them — and each job makes three events (`queued`, `running`,
//! `succeeded`).
//!
//! Subscribers connect before the first job, paced at `connect_rate` per
//! second, each with its own upgrade and token check, spread over
//! `source_ips` loopback source addresses (127.0.0.1, .2, …) so thousands of
//! sockets never run short of ephemeral ports. A delivery's latency is its
//! arrival at the subscriber minus the event's `at` stamp, which Redis's clock
//! writes in whole milliseconds when the transition commits: it covers the
//! API's stream read, the fan-out, the socket and this harness's read.
//!
//! The API closes a subscriber that falls `WS_BUFFER` messages behind with
//! 1013; those are counted, not retried.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::e2e::Target;
use super::latency::percentile;
use super::open_loop::{self, Schedule};
use crate::events_client::{self, ABNORMAL_CLOSE, TOO_SLOW_CLOSE};
use crate::measure::FanoutRun;
use crate::procs::{CpuOf, CpuTicks, cpu_secs};
use crate::redis_stats::RedisSample;
use crate::run::FanoutPlan;

/// Events each job makes: `queued`, `running`, `succeeded`.
pub const EVENTS_PER_JOB: u64 = 3;
/// Time for the connects beyond their paced schedule.
const CONNECT_SLACK: Duration = Duration::from_secs(30);

/// What the driver tells every subscriber.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    /// Events each subscriber should get; 0 while jobs are still being sent.
    expected: u64,
    stop: bool,
}

/// Counters every subscriber bumps.
#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    failed: AtomicU64,
    /// Subscribers that have all `expected` events.
    complete: AtomicU64,
    /// Subscribers the server closed (or whose socket broke) during the run.
    closed: AtomicU64,
}

/// One subscriber's account.
#[derive(Default)]
struct Ending {
    opened: bool,
    received: u64,
    /// Delivery latencies, ms.
    latencies: Vec<f32>,
    last_arrival: Option<Instant>,
    closed: Option<u16>,
}

/// Runs workload 6 with `subscribers` sockets, offering `offered` deliveries per second.
pub async fn with_subscribers(
    target: &Target<'_>,
    plan: &FanoutPlan,
    subscribers: u64,
    offered: f64,
    round: usize,
) -> anyhow::Result<FanoutRun> {
    let tally = Arc::new(Tally::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::default());
    let connect_started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / plan.connect_rate.max(1) as f64);
    let mut tasks = Vec::with_capacity(subscribers as usize);
    for i in 0..subscribers {
        tokio::time::sleep_until((connect_started + pace.mul_f64(i as f64)).into()).await;
        let (base, token) = (target.api.base.clone(), target.token.to_owned());
        let source = source_ip(i, plan.source_ips);
        tasks.push(tokio::spawn(subscribe(base, token, source, phase_rx.clone(), tally.clone())));
    }
    let deadline = Instant::now() + CONNECT_SLACK;
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < subscribers {
        if Instant::now() > deadline {
            let _ = phase_tx.send(Phase { expected: 0, stop: true });
            bail!("{} of {subscribers} subscribers connected within the time", tally.opened.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected = tally.opened.load(Ordering::Relaxed);
    if connected == 0 {
        bail!("no subscriber could connect");
    }

    let client = super::http_client()?;
    let url = format!("{}/v1/jobs", target.api.base);
    let body = serde_json::to_vec(&serde_json::json!({ "type": super::JOB_TYPE }))?;
    let mut conn = target.redis.connect().await?;
    let before = RedisSample::read(&mut conn).await?;
    let api_before = cpu_secs(target.api.cpu)?;
    let own_before = cpu_secs(CpuOf::ThisProcess)?;
    let ticks_before = CpuTicks::read(target.sut_cpu)?;

    let job_rate = offered / (EVENTS_PER_JOB * subscribers) as f64;
    let schedule = Schedule::new(job_rate, plan.secs);
    let send = |_scheduled: Instant| {
        let request =
            client.post(&url).bearer_auth(target.token).header("content-type", "application/json").body(body.clone());
        async move {
            match request.send().await {
                Ok(response) => response.status() == reqwest::StatusCode::ACCEPTED && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    };
    let accepted = open_loop::run(schedule, send, |_| false).await?.into_iter().filter(|ok| *ok).count() as u64;

    let expected = accepted * EVENTS_PER_JOB;
    let _ = phase_tx.send(Phase { expected, stop: false });
    let deadline = Instant::now() + Duration::from_secs_f64(plan.timeout_secs);
    while tally.complete.load(Ordering::Relaxed) + tally.closed.load(Ordering::Relaxed) < connected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let api_cpu = cpu_secs(target.api.cpu)? - api_before;
    let own_cpu = cpu_secs(CpuOf::ThisProcess)? - own_before;
    let busy = CpuTicks::read(target.sut_cpu)?.busy_pct_since(&ticks_before);
    let delta = before.delta(&RedisSample::read(&mut conn).await?);
    let _ = phase_tx.send(Phase { expected, stop: true });

    let mut endings = Vec::with_capacity(tasks.len());
    for task in tasks {
        endings.push(task.await.context("a subscriber task failed")?);
    }
    let live = || endings.iter().filter(|e| e.opened && e.closed.is_none());
    let lost: u64 = live().map(|e| expected.saturating_sub(e.received)).sum();
    let delivered: u64 = endings.iter().map(|e| e.received).sum();
    let closed =
        |slow: bool| endings.iter().filter(|e| e.closed.is_some_and(|c| (c == TOO_SLOW_CLOSE) == slow)).count();
    let last_arrival = endings.iter().filter_map(|e| e.last_arrival).max().unwrap_or(schedule.start);
    // Over the schedule, or until the last arrival if that came later (behind).
    let window = last_arrival.saturating_duration_since(schedule.start).as_secs_f64().max(plan.secs);
    let mut latencies: Vec<f64> = endings.iter().flat_map(|e| e.latencies.iter().map(|&l| f64::from(l))).collect();
    latencies.sort_by(f64::total_cmp);
    let per_delivery = |secs: f64| secs * 1e6 / delivered.max(1) as f64;
    Ok(FanoutRun {
        round,
        subscribers,
        connected,
        connect_secs,
        job_rate,
        jobs: accepted,
        events_per_subscriber: expected,
        offered_per_sec: offered,
        delivered,
        delivered_per_sec: delivered as f64 / window.max(1e-3),
        lost,
        closed_slow: closed(true) as u64,
        closed_other: closed(false) as u64 + (subscribers - connected),
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        api_cpu_us_per_delivery: per_delivery(api_cpu),
        harness_cpu_us_per_delivery: per_delivery(own_cpu),
        sut_cpu_busy_pct: busy,
        redis_cpu_us_per_job: delta.cpu_secs * 1e6 / accepted.max(1) as f64,
    })
}

/// Subscriber `i`'s source address: 127.0.0.1 …, round robin over `count`
/// (with one, the kernel picks, as for any client).
fn source_ip(i: u64, count: u8) -> Option<IpAddr> {
    (count > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % u64::from(count)) as u8)))
}

/// One subscriber: connects, then counts and times events until told to stop.
async fn subscribe(
    base: String,
    token: String,
    source: Option<IpAddr>,
    mut phase: watch::Receiver<Phase>,
    tally: Arc<Tally>,
) -> Ending {
    let mut socket = match events_client::open(&base, &token, "", source).await {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("bench: a fan-out subscriber did not connect: {err:#}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
            return Ending::default();
        }
    };
    tally.opened.fetch_add(1, Ordering::Relaxed);
    let mut ending = Ending { opened: true, ..Ending::default() };
    let mut complete = false;
    loop {
        let expected = phase.borrow().expected;
        if !complete && expected > 0 && ending.received >= expected {
            complete = true;
            tally.complete.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() || phase.borrow().stop {
                    break;
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now_ms = events_client::now_unix_ms();
                    if let Some(m) = events_client::parse(text.as_str())
                        && m.is_event()
                    {
                        ending.received += 1;
                        ending.last_arrival = Some(Instant::now());
                        if let Some(at) = m.at_ms() {
                            ending.latencies.push((now_ms - at) as f32);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    ending.closed = Some(events_client::close_code(frame.as_ref()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    ending.closed = Some(ABNORMAL_CLOSE);
                    break;
                }
            },
        }
    }
    if ending.closed.is_some() {
        tally.closed.fetch_add(1, Ordering::Relaxed);
    } else {
        drop(socket);
    }
    ending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_round_robin_over_loopback_addresses() {
        assert_eq!(source_ip(0, 1), None);
        assert_eq!(source_ip(0, 8), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(source_ip(9, 8), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    }
}
