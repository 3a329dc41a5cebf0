//! Cancellation of a running job, as its handler sees it: a flag to poll
//! ([`Cancellation::is_cancelled`]) and a future to `select!` on
//! ([`Cancellation::cancelled`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Why a run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A client cancelled the job. The job ends `cancelled` unless the run
    /// succeeds anyway: stop at the next safe point and return an error.
    Requested,
    /// This worker lost the run's lease: it could not renew it for a whole lease
    /// (Redis unreachable, the process paused), or the job was taken back and may
    /// already be running elsewhere. Whatever the run returns is dropped, so stop
    /// side effects at once; the worker abandons the run after one more lease.
    LeaseLost,
}

/// One run's cancellation signal; clones share it. Once cancelled it stays
/// cancelled, and a lost lease outranks a client's request. One atomic and a
/// `Notify`: every run has one, so it must cost next to nothing.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// [`REQUESTED`], [`LEASE_LOST`] and [`FINISHED`] bits.
    state: AtomicU8,
    changed: Notify,
}

const REQUESTED: u8 = 1;
const LEASE_LOST: u8 = 2;
/// The run's outcome is on its way to Redis: its lease can no longer be lost here.
const FINISHED: u8 = 4;

impl Cancellation {
    pub fn is_cancelled(&self) -> bool {
        self.state() & (REQUESTED | LEASE_LOST) != 0
    }

    pub fn reason(&self) -> Option<CancelReason> {
        let state = self.state();
        if state & LEASE_LOST != 0 {
            Some(CancelReason::LeaseLost)
        } else if state & REQUESTED != 0 {
            Some(CancelReason::Requested)
        } else {
            None
        }
    }

    fn state(&self) -> u8 {
        self.inner.state.load(Ordering::Acquire)
    }

    /// Resolves once the run is cancelled, with the reason.
    pub async fn cancelled(&self) -> CancelReason {
        self.wait(REQUESTED | LEASE_LOST).await;
        self.reason().unwrap_or(CancelReason::LeaseLost)
    }

    /// Resolves once the run's lease is lost (a client's request does not count).
    pub async fn lease_lost(&self) {
        self.wait(LEASE_LOST).await;
    }

    async fn wait(&self, bits: u8) {
        loop {
            // Registered before the check, so a cancel in between still wakes us.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state() & bits != 0 {
                return;
            }
            changed.await;
        }
    }

    /// Cancels the run. Returns whether this changed its reason; a lease is not
    /// lost once the run has [finished](Self::finish).
    pub fn cancel(&self, reason: CancelReason) -> bool {
        let bit = match reason {
            CancelReason::Requested => REQUESTED,
            CancelReason::LeaseLost => LEASE_LOST,
        };
        let updated = self.inner.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
            let blocked = state & LEASE_LOST != 0 || (bit == LEASE_LOST && state & FINISHED != 0);
            (!blocked && state & bit == 0).then_some(state | bit)
        });
        if updated.is_ok() {
            self.inner.changed.notify_waiters();
        }
        updated.is_ok()
    }

    /// Marks the run finished, its outcome about to be sent; `false` when its
    /// lease was lost first, and the outcome must be dropped instead.
    pub fn finish(&self) -> bool {
        self.inner.state.fetch_or(FINISHED, Ordering::AcqRel) & LEASE_LOST == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lost_lease_outranks_a_request_and_wakes_both_waits() {
        let cancel = Cancellation::default();
        assert!(!cancel.is_cancelled());
        let waiter = cancel.clone();
        let requested = tokio::spawn(async move { waiter.cancelled().await });
        assert!(cancel.cancel(CancelReason::Requested));
        assert_eq!(requested.await.unwrap(), CancelReason::Requested);
        assert!(!cancel.cancel(CancelReason::Requested), "already requested");

        let waiter = cancel.clone();
        let lost = tokio::spawn(async move { waiter.lease_lost().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!lost.is_finished(), "a request is not a lost lease");
        assert!(cancel.cancel(CancelReason::LeaseLost));
        lost.await.unwrap();
        assert!(!cancel.cancel(CancelReason::Requested), "nothing outranks a lost lease");
        assert_eq!(cancel.reason(), Some(CancelReason::LeaseLost));
        assert!(!cancel.finish(), "a run that lost its lease drops its outcome");
    }

    #[test]
    fn a_finished_run_keeps_its_outcome_and_cannot_lose_its_lease() {
        let cancel = Cancellation::default();
        assert!(cancel.cancel(CancelReason::Requested));
        assert!(cancel.finish(), "a requested cancel still records the outcome");
        assert!(!cancel.cancel(CancelReason::LeaseLost));
        assert_eq!(cancel.reason(), Some(CancelReason::Requested));
    }
}
