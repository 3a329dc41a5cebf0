//! Waiting, after an enqueue, until it is safe beyond one Redis's memory (see
//! [`Durability`]): `WAIT` for replicas, `WAITAOF` for the local disk.
//!
//! `WAIT` blocks the connection it runs on until it returns, so enqueues that
//! wait take turns over a few connections of their own, and nothing else (reads,
//! workers' scripts) ever queues behind a wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{Durability, connect};
use crate::error::{StoreError, StoreResult};

/// Connections the waiting enqueues share.
const CONNECTIONS: usize = 4;

pub(super) struct Durable {
    settings: Durability,
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Durable {
    /// Opens the connections; a reply may take `response_timeout` plus the wait.
    pub(super) async fn connect(url: &str, settings: Durability, response_timeout: Duration) -> StoreResult<Self> {
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(connect(url, Some(response_timeout + settings.timeout)).await?);
        }
        Ok(Self { settings, conns, next: AtomicUsize::new(0) })
    }

    /// The connection for the next enqueue: its script and its wait run on it.
    pub(super) fn conn(&self) -> ConnectionManager {
        self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()].clone()
    }

    /// Waits until this connection's writes so far are on the replicas (and disk)
    /// asked for; [`StoreError::NotDurable`] when the wait times out first.
    pub(super) async fn wait(&self, conn: &mut ConnectionManager) -> StoreResult<()> {
        let wanted = self.settings.replicas;
        // 0 would mean "wait for ever".
        let ms = (self.settings.timeout.as_millis() as u64).max(1);
        let (on_disk, replicas) = if self.settings.local_aof {
            redis::cmd("WAITAOF").arg(1).arg(wanted).arg(ms).query_async::<(u32, u32)>(conn).await?
        } else {
            (1, redis::cmd("WAIT").arg(wanted).arg(ms).query_async::<u32>(conn).await?)
        };
        if on_disk < 1 || replicas < wanted {
            let aof = if on_disk < 1 { " and not yet on the local disk" } else { "" };
            return Err(StoreError::NotDurable { replicas, wanted, aof });
        }
        Ok(())
    }
}
