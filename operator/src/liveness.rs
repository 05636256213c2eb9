//! Whether the controller still makes progress, for `/healthz`: work was
//! queued (a watch event for an existing ClawdBot) or a reconcile is
//! running, and nothing started or finished for longer than the stall
//! limit. A stuck controller then fails its liveness probe and the kubelet
//! restarts it, instead of a leader that holds its Lease and does nothing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Liveness {
    origin: Instant,
    stall: Duration,
    /// Milliseconds since `origin` of the last reconcile start or end.
    last_progress: AtomicU64,
    /// Milliseconds since `origin` (plus one) of the oldest trigger not yet
    /// followed by a reconcile start; 0 when none is waiting.
    pending_since: AtomicU64,
    in_flight: AtomicI64,
}

impl Liveness {
    pub fn new(stall: Duration) -> Self {
        Self {
            origin: Instant::now(),
            stall,
            last_progress: AtomicU64::new(0),
            pending_since: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// A watch event queued work.
    pub fn triggered(&self) {
        let now = self.now();
        let _ = self
            .pending_since
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn reconcile_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.pending_since.store(0, Ordering::SeqCst);
        self.last_progress.store(self.now(), Ordering::SeqCst);
    }

    pub fn reconcile_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.last_progress.store(self.now(), Ordering::SeqCst);
    }

    /// Err with the reason when the controller looks stuck.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(self.now())
    }

    fn check_at(&self, now: u64) -> Result<(), String> {
        let stall = self.stall.as_millis() as u64;
        let progress = self.last_progress.load(Ordering::SeqCst);
        let pending = self.pending_since.load(Ordering::SeqCst);
        let busy = self.in_flight.load(Ordering::SeqCst) > 0;
        let waiting_since = if pending > 0 {
            pending.max(progress)
        } else {
            0
        };
        if waiting_since > 0 && now.saturating_sub(waiting_since) > stall {
            return Err(format!(
                "work has been queued for {} s without a reconcile starting",
                (now - waiting_since) / 1000
            ));
        }
        if busy && now.saturating_sub(progress) > stall {
            return Err(format!(
                "no reconcile has started or finished for {} s while one is running",
                (now - progress) / 1000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_healthy_queued_work_without_progress_is_not() {
        let l = Liveness::new(Duration::from_secs(60));
        assert!(l.check_at(10_000_000).is_ok(), "idle for hours is fine");
        l.pending_since.store(1_000, Ordering::SeqCst);
        assert!(l.check_at(30_000).is_ok());
        assert!(l.check_at(62_000).is_err(), "queued for 61 s");
        l.reconcile_started();
        assert!(l.check().is_ok());
        // A reconcile that never ends.
        let started = l.last_progress.load(Ordering::SeqCst);
        assert!(l.check_at(started + 59_000).is_ok());
        assert!(l.check_at(started + 61_000).is_err());
        l.reconcile_finished();
        assert!(
            l.check_at(l.last_progress.load(Ordering::SeqCst) + 3_600_000)
                .is_ok()
        );
    }

    #[test]
    fn a_trigger_while_busy_counts_from_the_last_progress() {
        let l = Liveness::new(Duration::from_secs(60));
        l.reconcile_started();
        l.triggered();
        let p = l.last_progress.load(Ordering::SeqCst);
        assert!(l.check_at(p + 30_000).is_ok());
        l.reconcile_finished();
        l.reconcile_started();
        assert!(l.check_at(p + 100).is_ok());
    }
}
