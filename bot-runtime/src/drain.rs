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
    /// Tasks inside [`Drain::wait_idle`]. The last guard of a busy spell
    /// wakes them only when there are any: the work counter falls to zero
    /// between most requests, and a wakeup each time would cost every
    /// request a context switch for nothing.
    idle_waiters: AtomicUsize,
    started: Notify,
    idle: Notify,
    /// When draining started: later shutdown steps share the deadline.
    since: OnceLock<Instant>,
}

/// Counts one piece of admitted work until dropped.
pub struct WorkGuard(Arc<Drain>);

impl Drain {
    pub fn start(&self) {
        let _ = self.since.set(Instant::now());
        self.draining.store(true, Ordering::SeqCst);
        self.started.notify_waiters();
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
            let notified = self.started.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when no admitted work is left, or after `deadline`; returns
    /// how much work was still running.
    pub async fn wait_idle(&self, deadline: Duration) -> usize {
        // Registered before reading the counter, as the guard decrements
        // it before reading ours (both SeqCst): either this sees zero or
        // the last guard sees a waiter and wakes it.
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = IdleWaiter(self);
        let wait = async {
            loop {
                let notified = self.idle.notified();
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

struct IdleWaiter<'a>(&'a Drain);

impl Drop for IdleWaiter<'_> {
    fn drop(&mut self) {
        self.0.idle_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let drain = &self.0;
        if drain.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && drain.idle_waiters.load(Ordering::SeqCst) > 0
        {
            drain.idle.notify_waiters();
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

    /// Waiting for idle does not need draining to have started, and a
    /// waiter that gave up leaves no registration behind.
    #[tokio::test]
    async fn idle_wakes_a_waiter_without_draining_and_unregisters_it() {
        let d = Arc::new(Drain::default());
        let g = d.track();
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(d.idle_waiters.load(Ordering::SeqCst), 1);
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(d.idle_waiters.load(Ordering::SeqCst), 0);
        let _g = d.track();
        assert_eq!(d.wait_idle(Duration::from_millis(10)).await, 1);
        assert_eq!(d.idle_waiters.load(Ordering::SeqCst), 0);
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
        let d = Arc::new(Drain::default());
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
        let d = Arc::new(Drain::default());
        let _g = d.track();
        assert_eq!(d.wait_idle(Duration::from_millis(20)).await, 1);
    }
}
