//! The acker: one background task per worker that flushes outcomes in batches
//! and reaps expired leases (REAP), with two helpers of its own: the heartbeat,
//! which renews the leases of held runs and hands back the jobs of claims whose
//! reply was lost (HEARTBEAT), and the watchdog, which cancels runs whose lease
//! could not be renewed in time.
//! Both run beside the acker, so a Redis call that hangs holds none of them up.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};

use super::{AckMsg, Inner, Outcome, OutcomeKind, RunKey};
use crate::error::StoreError;
use crate::jobs::CancelReason;
use crate::keys::Keys;
use crate::scripts;
use crate::store::StoreConfig;

/// Most expired leases one REAP call takes back per queue.
const REAP_LIMIT: usize = 1_000;

pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let lease = inner.settings.lease;
    let heartbeat = tokio::spawn(heartbeat(inner.clone()));
    let watchdog = tokio::spawn(watchdog(inner.clone()));
    // Every second at least: REAP also sweeps what expired after the last ACK.
    let mut reap = interval((lease / 2).min(Duration::from_secs(1)));
    reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending: Vec<Outcome> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    // Short retentions: sweep right after what this worker finished last expires.
    let mut sweep_at: Option<Instant> = None;
    let short_retention = inner.settings.store.succeeded_ttl <= Duration::from_secs(60);
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
                    heartbeat.abort();
                    watchdog.abort();
                    let _ = done.send(());
                    return;
                }
                None => {
                    flush_all(&inner, &mut pending).await;
                    heartbeat.abort();
                    watchdog.abort();
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
                        if short_retention {
                            sweep_at = Some(Instant::now() + inner.settings.store.succeeded_ttl + Duration::from_millis(100));
                        }
                    }
                    Err(err) => {
                        metrics::counter!("redis_errors_total", "op" => "ack").increment(1);
                        tracing::warn!(error = %err, pending = pending.len(), "cannot record outcomes yet; retrying");
                        flush_at = Some(Instant::now() + retry_delay);
                        retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
            _ = sleep_until(sweep_at.unwrap_or_else(Instant::now)), if sweep_at.is_some() => {
                sweep_at = None;
                if let Err(err) = reap_expired(&inner).await {
                    tracing::warn!(error = %err, "sweeping failed");
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

/// Renews every held lease each third of a lease. One call at a time.
async fn heartbeat(inner: Arc<Inner>) {
    let mut ticks = interval(inner.settings.lease / 3);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = beat(&inner).await {
            metrics::counter!("redis_errors_total", "op" => "heartbeat").increment(1);
            tracing::warn!(error = %err, "heartbeat failed");
        }
    }
}

/// Cancels runs whose lease nobody could renew for a whole lease: Redis may
/// have given the job to another worker meanwhile.
async fn watchdog(inner: Arc<Inner>) {
    let lease = inner.settings.lease;
    let mut ticks = interval((lease / 10).max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = std::time::Instant::now();
        let lost = inner
            .leases()
            .values()
            .filter(|held| now.duration_since(held.renewed) >= lease && held.cancel.cancel(CancelReason::LeaseLost))
            .count();
        if lost > 0 {
            metrics::counter!("jobs_leases_lost_total", "reason" => "unrenewed").increment(lost as u64);
            tracing::warn!(lost, "cancelled runs whose lease could not be renewed for a whole lease");
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
            .arg(store.failed_ttl.as_millis() as u64)
            .arg(store.succeeded_max_per_queue);
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
                call.arg(&outcome.key.0).arg(&outcome.meta).arg(outcome.key.1);
                match (outcome.kind, outcome.retention_secs) {
                    (OutcomeKind::Retry, _) => call.arg(outcome.retry_delay.as_millis() as u64),
                    (OutcomeKind::Succeeded, Some(secs)) => call.arg(format!("ok:{secs}")),
                    (kind, _) => call.arg(kind.as_str()),
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
            leases.remove(&outcome.key);
        }
    }
    Ok(())
}

/// One HEARTBEAT: renews the leases of the runs held, hands back the jobs of
/// claims whose reply was lost, and acts on the answers: a requested
/// cancellation is passed to the handler, a lost lease cancels it. Runs already
/// given up are left to lapse.
async fn beat(inner: &Inner) -> Result<(), StoreError> {
    let sent = std::time::Instant::now();
    let held: Vec<(RunKey, String, u64)> = inner
        .leases()
        .iter()
        .filter(|(_, held)| held.cancel.reason() != Some(CancelReason::LeaseLost))
        .map(|(key, held)| (key.clone(), held.queue.clone(), held.claim))
        .collect();
    let lost: Vec<u64> = inner.lost_claims().clone();
    let info = serde_json::to_string(&inner.settings.worker).unwrap_or_default();
    let mut call = scripts::HEARTBEAT.key(inner.keys.workers());
    call.arg(inner.keys.tag())
        .arg(&inner.settings.worker.id)
        .arg(inner.settings.lease.as_millis() as u64)
        .arg(info)
        .arg(inner.settings.store.events_maxlen)
        .arg(lost.len());
    for claim in &lost {
        call.arg(*claim);
    }
    for ((id, token), queue, claim) in &held {
        call.arg(id).arg(queue).arg(*token).arg(*claim);
    }
    let reply: Vec<u64> = call.invoke_async(&mut inner.conn.clone()).await?;
    inner.lost_claims().retain(|claim| !lost.contains(claim));
    let (handed_back, states) = reply.split_first().map_or((0, &[][..]), |(n, rest)| (*n, rest));
    if handed_back > 0 {
        tracing::warn!(handed_back, "handed back the jobs of claims whose reply never arrived");
    }
    let mut taken = 0;
    let mut leases = inner.leases();
    for ((key, _, _), state) in held.iter().zip(states) {
        let Some(lease) = leases.get_mut(key) else { continue };
        match state {
            0 | 1 => {
                lease.renewed = lease.renewed.max(sent);
                if *state == 1 {
                    lease.cancel.cancel(CancelReason::Requested);
                }
            }
            _ => {
                if lease.cancel.cancel(CancelReason::LeaseLost) {
                    taken += 1;
                    tracing::warn!(job.id = %key.0, run = key.1, "lease lost: the job was taken back; cancelling this run");
                }
            }
        }
    }
    if taken > 0 {
        metrics::counter!("jobs_leases_lost_total", "reason" => "taken").increment(taken);
    }
    Ok(())
}

async fn reap_expired(inner: &Inner) -> Result<usize, StoreError> {
    reap(&mut inner.conn.clone(), &inner.keys, &inner.settings.store, inner.settings.lease).await
}

/// Takes back expired leases and sweeps records past their retention, as every
/// worker's acker does each half lease; `lease` is the workers' lease. Returns
/// the number of jobs taken back.
pub async fn reap(
    conn: &mut ConnectionManager,
    keys: &Keys,
    store: &StoreConfig,
    lease: Duration,
) -> Result<usize, StoreError> {
    let mut total = 0;
    // Bounded: a huge backlog of expired leases or records is worked off over several ticks.
    for _ in 0..20 {
        let (reaped, swept, more): (usize, usize, u8) = scripts::REAP
            .key(keys.events())
            .arg(keys.tag())
            .arg(REAP_LIMIT)
            .arg(store.events_maxlen)
            .arg(store.failed_ttl.as_millis() as u64)
            .arg(lease.as_millis() as u64)
            .invoke_async(conn)
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
