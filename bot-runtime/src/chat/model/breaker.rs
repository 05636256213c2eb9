//! Circuit breaker per upstream endpoint: after N consecutive failures the
//! endpoint is skipped for a while, then a single trial call decides.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; `since` lets a lost trial (cancelled caller)
    /// be replaced instead of wedging the endpoint.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// Whether a call may go out now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    pub fn record_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now());
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { until } if Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of a
        // Copy value; the value is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now < until => false,
            State::HalfOpen { since } if now < since + self.open_for => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                true
            }
        }
    }

    fn record_failure_at(&self, now: Instant) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_failure_at(t0);
            assert!(b.allow_at(t0));
        }
        b.record_failure_at(t0);
        assert!(!b.allow_at(t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(11);
        assert!(b.allow_at(later), "trial call after the open period");
        assert!(!b.allow_at(later), "only one trial at a time");
        b.record_success();
        assert!(b.allow_at(later) && b.allow_at(later));
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let b = Breaker::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure_at(t0);
        let t1 = t0 + Duration::from_secs(6);
        assert!(b.allow_at(t1));
        b.record_failure_at(t1);
        assert!(!b.allow_at(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn a_lost_trial_is_replaced_after_the_open_period() {
        let b = Breaker::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure_at(t0);
        let t1 = t0 + Duration::from_secs(6);
        assert!(b.allow_at(t1));
        assert!(b.allow_at(t1 + Duration::from_secs(6)));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure_at(t0);
        b.record_success();
        b.record_failure_at(t0);
        assert!(b.allow_at(t0));
    }
}
