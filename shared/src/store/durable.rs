//! Waiting, after an enqueue, until it is safe beyond one Redis's memory (see
//! [`Durability`]): `WAIT` for replicas, `WAITAOF` for the local disk.
//!
//! Group commit: one task sends the waits, back to back, on a connection of its
//! own (a wait blocks the connection it runs on, so nothing else queues behind
//! it). Each wait covers every enqueue whose script had answered when the wait
//! was sent, however many: just before it, the task writes a counter
//! ([`Keys::durable_tick`]), and a wait covers its own connection's writes, which
//! come after every write Redis ran before them, from any connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{Notify, oneshot};

use super::{Durability, connect};
use crate::error::{StoreError, StoreResult};
use crate::keys::Keys;

/// What one wait found: `(on the local disk, replicas)`, or `None` when it failed.
type Confirmed = Option<(u32, u32)>;

pub(super) struct Durable {
    settings: Durability,
    /// Enqueues whose script answered, waiting for the next wait.
    waiting: Mutex<Vec<oneshot::Sender<Confirmed>>>,
    wake: Notify,
}

impl Durable {
    /// Connects the waits' own connection (a reply may take `response_timeout`
    /// plus the wait) and starts the task that sends them.
    pub(super) async fn start(
        url: &str,
        keys: &Keys,
        settings: Durability,
        response_timeout: Duration,
    ) -> StoreResult<Arc<Self>> {
        let conn = connect(url, Some(response_timeout + settings.timeout)).await?;
        let durable = Arc::new(Self { settings, waiting: Mutex::default(), wake: Notify::new() });
        tokio::spawn(waits(durable.clone(), conn, keys.durable_tick()));
        Ok(durable)
    }

    /// Waits until every write made so far (this enqueue's included) is on the
    /// replicas and disk asked for; [`StoreError::NotDurable`] when the wait
    /// times out first.
    pub(super) async fn wait(&self) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        self.wake.notify_one();
        let wanted = self.settings.replicas;
        match rx.await.ok().flatten() {
            Some((on_disk, replicas)) if on_disk >= 1 && replicas >= wanted => Ok(()),
            Some((on_disk, replicas)) => {
                let aof = if on_disk < 1 { " and not yet on the local disk" } else { "" };
                Err(StoreError::NotDurable { replicas, wanted, aof })
            }
            None => Err(StoreError::NotDurable { replicas: 0, wanted, aof: ", as the wait itself failed," }),
        }
    }
}

/// Sends a wait whenever enqueues are waiting, and answers all of them with it.
async fn waits(durable: Arc<Durable>, mut conn: ConnectionManager, tick: String) {
    let settings = durable.settings;
    // 0 would mean "wait for ever".
    let ms = (settings.timeout.as_millis() as u64).max(1);
    loop {
        durable.wake.notified().await;
        let batch = std::mem::take(&mut *durable.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&tick).ignore();
        let confirmed: Confirmed = if settings.local_aof {
            pipe.cmd("WAITAOF").arg(1).arg(settings.replicas).arg(ms);
            pipe.query_async::<((u32, u32),)>(&mut conn).await.ok().map(|(found,)| found)
        } else {
            pipe.cmd("WAIT").arg(settings.replicas).arg(ms);
            pipe.query_async::<(u32,)>(&mut conn).await.ok().map(|(replicas,)| (1, replicas))
        };
        if confirmed.is_none() {
            tracing::warn!("a replica wait failed; its enqueues answer not_replicated");
        }
        for waiter in batch {
            let _ = waiter.send(confirmed);
        }
    }
}
