//! Cancellation of a running job, as its handler sees it: a flag to poll
//! ([`Cancellation::is_cancelled`]) and a future to `select!` on
//! ([`Cancellation::cancelled`]).

use tokio::sync::watch;

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
/// cancelled, and a lost lease outranks a client's request.
#[derive(Debug, Clone)]
pub struct Cancellation {
    signal: watch::Sender<Signal>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    reason: Option<CancelReason>,
    /// The run's outcome is on its way to Redis: its lease can no longer be lost here.
    finished: bool,
}

impl Default for Cancellation {
    fn default() -> Self {
        Self { signal: watch::Sender::new(Signal::default()) }
    }
}

impl Cancellation {
    pub fn is_cancelled(&self) -> bool {
        self.signal.borrow().reason.is_some()
    }

    pub fn reason(&self) -> Option<CancelReason> {
        self.signal.borrow().reason
    }

    /// Resolves once the run is cancelled, with the reason.
    pub async fn cancelled(&self) -> CancelReason {
        self.wait(|reason| reason.is_some()).await
    }

    /// Resolves once the run's lease is lost (a client's request does not count).
    pub async fn lease_lost(&self) {
        self.wait(|reason| reason == Some(CancelReason::LeaseLost)).await;
    }

    async fn wait(&self, until: impl Fn(Option<CancelReason>) -> bool) -> CancelReason {
        let mut seen = self.signal.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        match seen.wait_for(|signal| until(signal.reason)).await {
            Ok(signal) => signal.reason.unwrap_or(CancelReason::LeaseLost),
            Err(_) => CancelReason::LeaseLost,
        }
    }

    /// Cancels the run. Returns whether this changed its reason; a lease is not
    /// lost once the run has [finished](Self::finish).
    pub fn cancel(&self, reason: CancelReason) -> bool {
        self.signal.send_if_modified(|signal| {
            let replace = match (signal.reason, reason) {
                (_, CancelReason::LeaseLost) if signal.finished => false,
                (None, _) => true,
                (Some(CancelReason::Requested), CancelReason::LeaseLost) => true,
                (Some(_), _) => false,
            };
            if replace {
                signal.reason = Some(reason);
            }
            replace
        })
    }

    /// Marks the run finished, its outcome about to be sent; `false` when its
    /// lease was lost first, and the outcome must be dropped instead.
    pub fn finish(&self) -> bool {
        let mut kept = false;
        self.signal.send_if_modified(|signal| {
            kept = signal.reason != Some(CancelReason::LeaseLost);
            signal.finished = true;
            false
        });
        kept
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
