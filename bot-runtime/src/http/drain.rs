//! Graceful shutdown: once draining, readiness answers 503 and new work is
//! refused, while work already admitted (requests and streams) is tracked so
//! shutdown can wait for it, up to the drain deadline. tokio-util's
//! `TaskTracker` counts the work, a `CancellationToken` says draining began.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

#[derive(Default)]
pub struct Drain {
    work: TaskTracker,
    draining: CancellationToken,
    /// When draining started: later shutdown steps share the deadline.
    since: OnceLock<Instant>,
}

/// Counts one piece of admitted work until dropped.
pub type WorkGuard = TaskTrackerToken;

impl Drain {
    pub fn start(&self) {
        let _ = self.since.set(Instant::now());
        self.work.close();
        self.draining.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// How long ago draining started; `None` before.
    pub fn draining_for(&self) -> Option<Duration> {
        self.since.get().map(Instant::elapsed)
    }

    pub fn in_flight(&self) -> usize {
        self.work.len()
    }

    pub fn track(&self) -> WorkGuard {
        self.work.token()
    }

    /// Cancelled when draining starts, for background work that stops then.
    pub fn token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        self.draining.cancelled().await
    }

    /// Once draining: resolves when no admitted work is left, or after
    /// `deadline`; returns how much work was still running.
    pub async fn wait_idle(&self, deadline: Duration) -> usize {
        let _ = tokio::time::timeout(deadline, self.work.wait()).await;
        self.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn waits_for_work_then_returns() {
        let d = Arc::new(Drain::default());
        let g = d.track();
        d.start();
        assert!(d.is_draining());
        assert_eq!(d.in_flight(), 1);
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    /// The end of a busy spell does not wake tasks waiting for the drain
    /// to start (the runtime's main task, the delivery loops among them).
    #[tokio::test]
    async fn idle_moments_do_not_wake_drain_waiters() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = Drain::default();
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut started = pin!(d.started());
        assert!(started.as_mut().poll(&mut cx).is_pending());
        for _ in 0..3 {
            drop(d.track());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        d.start();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(started.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let d = Drain::default();
        let _g = d.track();
        d.start();
        assert_eq!(d.wait_idle(Duration::from_millis(20)).await, 1);
    }
}
