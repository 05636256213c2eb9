//! Graceful shutdown: once draining, readiness answers 503 and new work is
//! refused, while work already admitted (requests and streams) is counted so
//! shutdown can wait for it, up to the drain deadline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    changed: Notify,
    /// When draining started: later shutdown steps share the deadline.
    since: OnceLock<Instant>,
}

/// Counts one piece of admitted work until dropped.
pub struct WorkGuard(Arc<Drain>);

impl Drain {
    pub fn start(&self) {
        let _ = self.since.set(Instant::now());
        self.draining.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// How long ago draining started; `None` before.
    pub fn draining_for(&self) -> Option<Duration> {
        self.since.get().map(Instant::elapsed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn track(self: &Arc<Self>) -> WorkGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        WorkGuard(self.clone())
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when no admitted work is left, or after `deadline`; returns
    /// how much work was still running.
    pub async fn wait_idle(&self, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.in_flight()
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_work_then_returns() {
        let d = Arc::new(Drain::default());
        let g = d.track();
        d.start();
        assert!(d.is_draining());
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let d = Arc::new(Drain::default());
        let _g = d.track();
        assert_eq!(d.wait_idle(Duration::from_millis(20)).await, 1);
    }
}
