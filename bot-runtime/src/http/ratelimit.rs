//! Per-client limits: governor's keyed GCRA for the request rate, and a
//! bounded moka cache for the failed-authentication window. Clients are
//! keyed by address, an IPv6 client by its /64 (one host usually holds a
//! whole /64, so it cannot mint a fresh key per request).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use moka::sync::Cache;

/// Clients the failed-authentication window remembers at most (an address
/// scan evicts the rarest, not the repeat offenders: moka's TinyLFU).
const MAX_THROTTLED_CLIENTS: u64 = 100_000;

/// The key a client's limits are kept under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

pub struct RateLimiter {
    /// None: the limit is off (a rate of 0).
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimiter {
    /// `rate` requests per second per client, bursts of up to `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        let quota = (rate > 0.0)
            .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / rate)))
            .flatten()
            .map(|q| q.allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN)));
        Self {
            limiter: quota.map(DefaultKeyedRateLimiter::keyed),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// `Ok` to go ahead, or `Err(whole seconds until the next request may)`.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&client_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(l.clock().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Forgets clients whose allowance is whole again (they would start
    /// from a full burst anyway); run now and then so a scan of addresses
    /// does not pile up.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Failed authentications per client within a fixed window.
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    /// Failures so far and when the window started.
    failures: Cache<IpAddr, (u32, Instant)>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            failures: Cache::builder()
                .max_capacity(MAX_THROTTLED_CLIENTS)
                .time_to_live(window)
                .build(),
        }
    }

    /// `Err(seconds left)` while the client is blocked.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        match self.failures.get(&client_key(ip)) {
            Some((n, since)) if n >= self.max_failures && now < since + self.window => {
                Err((since + self.window - now).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        self.failures
            .entry(client_key(ip))
            .and_upsert_with(|before| match before.map(|e| e.into_value()) {
                Some((n, since)) if now < since + self.window => (n + 1, since),
                _ => (1, now),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let rl = RateLimiter::new(2.0, 3);
        for _ in 0..3 {
            assert!(rl.check(ip("1.2.3.4")).is_ok());
        }
        assert_eq!(rl.check(ip("1.2.3.4")), Err(1));
        assert!(
            rl.check(ip("5.6.7.8")).is_ok(),
            "clients have their own allowance"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            rl.check(ip("1.2.3.4")).is_ok(),
            "one more after half a second"
        );
        assert!(rl.check(ip("1.2.3.4")).is_err());
        rl.forget_idle();
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let rl = RateLimiter::new(1.0, 2);
        assert!(rl.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(rl.check(ip("2001:db8:1:2:ffff::9")).is_ok());
        assert!(rl.check(ip("2001:db8:1:2:abcd::7")).is_err(), "same /64");
        assert!(rl.check(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn zero_rate_is_off() {
        let rl = RateLimiter::new(0.0, 1);
        assert!(!rl.enabled());
        for _ in 0..100 {
            assert!(rl.check(ip("1.2.3.4")).is_ok());
        }
    }

    #[test]
    fn throttle_blocks_after_max_failures_within_the_window() {
        let t = AuthThrottle::new(2, Duration::from_secs(60));
        t.record_failure(ip("1.2.3.4"));
        assert!(t.check(ip("1.2.3.4")).is_ok());
        t.record_failure(ip("1.2.3.4"));
        assert!(matches!(t.check(ip("1.2.3.4")), Err(s) if (59..=60).contains(&s)));
        assert!(t.check(ip("9.9.9.9")).is_ok());
        // An IPv6 client cannot step around it inside its /64.
        t.record_failure(ip("2001:db8::1"));
        t.record_failure(ip("2001:db8::2"));
        assert!(t.check(ip("2001:db8::3")).is_err());
    }

    #[test]
    fn the_throttle_window_ends() {
        let t = AuthThrottle::new(1, Duration::from_millis(200));
        t.record_failure(ip("1.2.3.4"));
        assert!(t.check(ip("1.2.3.4")).is_err());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check(ip("1.2.3.4")).is_ok());
    }
}
