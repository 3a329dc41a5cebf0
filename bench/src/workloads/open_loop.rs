//! The open-loop load generator of workloads 3, 4 and 6.
//!
//! A dedicated thread keeps the schedule (request i is due at start + i/rate)
//! and hands each request to the async side when it is due, whether or not
//! earlier ones have been answered. Callers measure from the *scheduled* time,
//! so a stall in the system under test counts against every request it delays
//! (no coordinated omission).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;

/// Requests in flight beyond this are not sent but handed to `skipped`: a
/// stalled API must not make the generator open connections without bound.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Time between building the schedule and its first request.
const LEAD: Duration = Duration::from_millis(50);

/// `total` requests, `rate` per second, from `start`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub rate: f64,
    pub total: u64,
    pub start: Instant,
}

impl Schedule {
    /// `secs` seconds at `rate` per second, starting shortly.
    pub fn new(rate: f64, secs: f64) -> Self {
        let rate = rate.max(0.001);
        Self { rate, total: (secs * rate).round() as u64, start: Instant::now() + LEAD }
    }

    /// When request `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Runs `send(scheduled)` on its own task for every request of the schedule when
/// it is due; returns every outcome (in completion order). A request that would
/// exceed [`MAX_IN_FLIGHT`] gets `skipped(scheduled)` instead.
pub async fn run<T, Fut>(
    schedule: Schedule,
    send: impl Fn(Instant) -> Fut,
    skipped: impl Fn(Instant) -> T,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let scheduler = std::thread::spawn(move || {
        for i in 0..schedule.total {
            let at = schedule.due(i);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if due_tx.send(at).is_err() {
                return;
            }
        }
    });

    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut outcomes = Vec::with_capacity(schedule.total as usize);
    let mut tasks: JoinSet<T> = JoinSet::new();
    while let Some(scheduled) = due_rx.recv().await {
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            outcomes.push(skipped(scheduled));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let request = send(scheduled);
        let in_flight = in_flight.clone();
        tasks.spawn(async move {
            let outcome = request.await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            outcome
        });
        // Collect finished ones as we go, so the set stays small.
        while let Some(joined) = tasks.try_join_next() {
            outcomes.push(joined.context("a request task panicked")?);
        }
    }
    let _ = scheduler.join();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.context("a request task panicked")?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_spaces_requests_evenly() {
        let schedule = Schedule::new(200.0, 0.5);
        assert_eq!(schedule.total, 100);
        assert_eq!(schedule.due(100) - schedule.due(0), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn every_scheduled_request_is_sent_once() {
        let outcomes = run(Schedule::new(1000.0, 0.05), |at| async move { at }, |at| at).await.unwrap();
        assert_eq!(outcomes.len(), 50);
    }
}
