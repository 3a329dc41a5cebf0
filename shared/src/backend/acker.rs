//! The acker: one background task per worker that flushes outcomes in batches,
//! renews the leases of held jobs (HEARTBEAT) and reaps expired leases (REAP).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};

use super::{AckMsg, Inner, Outcome, OutcomeKind};
use crate::error::StoreError;
use crate::scripts;

/// Most expired leases one REAP call takes back per queue.
const REAP_LIMIT: usize = 1_000;

pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let lease = inner.settings.lease;
    let mut heartbeat = interval(lease / 3);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reap = interval(lease / 2);
    reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending: Vec<Outcome> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    let mut retry_delay = Duration::from_millis(50);

    loop {
        tokio::select! {
            biased;
            message = rx.recv() => match message {
                Some(AckMsg::Done(outcome)) => {
                    pending.push(outcome);
                    if pending.len() >= inner.settings.ack_batch {
                        flush_at = Some(Instant::now());
                    } else if flush_at.is_none() {
                        flush_at = Some(Instant::now() + inner.settings.ack_delay);
                    }
                }
                Some(AckMsg::Close(done)) => {
                    drain(&mut rx, &mut pending);
                    flush_all(&inner, &mut pending).await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    flush_all(&inner, &mut pending).await;
                    return;
                }
            },
            _ = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                drain(&mut rx, &mut pending);
                match flush(&inner, &pending).await {
                    Ok(()) => {
                        pending.clear();
                        flush_at = None;
                        retry_delay = Duration::from_millis(50);
                    }
                    Err(err) => {
                        metrics::counter!("redis_errors_total", "op" => "ack").increment(1);
                        tracing::warn!(error = %err, pending = pending.len(), "cannot record outcomes yet; retrying");
                        flush_at = Some(Instant::now() + retry_delay);
                        retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
            _ = heartbeat.tick() => {
                if let Err(err) = beat(&inner).await {
                    tracing::warn!(error = %err, "heartbeat failed");
                }
            }
            _ = reap.tick() => {
                match reap_expired(&inner).await {
                    Ok(0) => {}
                    Ok(reaped) => {
                        metrics::counter!("jobs_reaped_total").increment(reaped as u64);
                        tracing::warn!(reaped, "took back jobs whose lease expired");
                    }
                    Err(err) => tracing::warn!(error = %err, "reaping failed"),
                }
            }
        }
    }
}

/// Takes every outcome already queued, so a flush carries as many as possible.
fn drain(rx: &mut mpsc::UnboundedReceiver<AckMsg>, pending: &mut Vec<Outcome>) {
    while let Ok(message) = rx.try_recv() {
        match message {
            AckMsg::Done(outcome) => pending.push(outcome),
            AckMsg::Close(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Flushes at shutdown, retrying for a bounded time while Redis is away.
async fn flush_all(inner: &Inner, pending: &mut Vec<Outcome>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() {
        match flush(inner, pending).await {
            Ok(()) => pending.clear(),
            Err(err) if Instant::now() < deadline => {
                tracing::warn!(error = %err, "cannot record outcomes yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => {
                tracing::error!(error = %err, lost = pending.len(), "gave up recording outcomes; those jobs will run again after their lease");
                return;
            }
        }
    }
}

async fn flush(inner: &Inner, pending: &[Outcome]) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let store = &inner.settings.store;
    for chunk in pending.chunks(1_000) {
        let mut call = scripts::ACK.key(inner.keys.events());
        call.arg(inner.keys.tag())
            .arg(store.events_maxlen)
            .arg(store.succeeded_ttl.as_millis() as u64)
            .arg(store.failed_ttl.as_millis() as u64);
        let mut by_queue: Vec<(&str, Vec<&Outcome>)> = Vec::new();
        for outcome in chunk {
            match by_queue.iter_mut().find(|(queue, _)| *queue == outcome.queue) {
                Some((_, members)) => members.push(outcome),
                None => by_queue.push((outcome.queue.as_str(), vec![outcome])),
            }
        }
        call.arg(by_queue.len());
        for (queue, members) in by_queue {
            call.arg(queue).arg(members.len());
            for outcome in members {
                call.arg(&outcome.id).arg(&outcome.meta).arg(outcome.attempt);
                match outcome.kind {
                    OutcomeKind::Retry => call.arg(outcome.retry_delay.as_millis() as u64),
                    kind => call.arg(kind.as_str()),
                };
                call.arg(&outcome.text);
            }
        }
        let stale: usize = call.invoke_async(&mut inner.conn.clone()).await?;
        metrics::counter!("jobs_acked_total").increment((chunk.len() - stale) as u64);
        if stale > 0 {
            metrics::counter!("jobs_stale_outcomes_total").increment(stale as u64);
            tracing::warn!(stale, "outcomes arrived after their lease was lost and were ignored");
        }
        let mut leases = inner.leases();
        for outcome in chunk {
            leases.remove(&outcome.id);
        }
    }
    Ok(())
}

async fn beat(inner: &Inner) -> Result<(), StoreError> {
    let held: Vec<(String, super::Lease)> =
        inner.leases().iter().map(|(id, lease)| (id.clone(), lease.clone())).collect();
    let info = serde_json::to_string(&inner.settings.worker).unwrap_or_default();
    let mut call = scripts::HEARTBEAT.key(inner.keys.workers());
    call.arg(inner.keys.tag()).arg(&inner.settings.worker.id).arg(inner.settings.lease.as_millis() as u64).arg(info);
    for (id, lease) in &held {
        call.arg(id).arg(&lease.queue).arg(lease.attempt);
    }
    let states: Vec<u8> = call.invoke_async(&mut inner.conn.clone()).await?;
    for ((id, lease), state) in held.iter().zip(states) {
        match state {
            1 => lease.cancelled.store(true, Ordering::Relaxed),
            2 => tracing::warn!(job.id = %id, "lease lost; this attempt's outcome will be ignored"),
            _ => {}
        }
    }
    Ok(())
}

async fn reap_expired(inner: &Inner) -> Result<usize, StoreError> {
    let store = &inner.settings.store;
    let horizon = store.failed_ttl.max(store.succeeded_ttl);
    let mut total = 0;
    // Bounded: a huge backlog of expired leases or records is worked off over several ticks.
    for _ in 0..20 {
        let (reaped, swept, more): (usize, usize, u8) = scripts::REAP
            .key(inner.keys.events())
            .arg(inner.keys.tag())
            .arg(REAP_LIMIT)
            .arg(store.events_maxlen)
            .arg(store.failed_ttl.as_millis() as u64)
            .arg(horizon.as_millis() as u64)
            .arg((inner.settings.lease * 3).as_millis() as u64)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        total += reaped;
        if swept > 0 {
            tracing::debug!(swept, "deleted records past their retention");
        }
        if reaped < REAP_LIMIT && more == 0 {
            break;
        }
    }
    Ok(total)
}
