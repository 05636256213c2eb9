//! Shared state handed to every handler: cheap to clone (one `Arc`).

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawdbot_config::RuntimeConfig;
use ipnet::IpNet;

use crate::auth::KeyStore;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::model::Provider;
use crate::ratelimit::{AuthThrottle, RateLimiter};
use crate::sessions::SessionStore;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub cfg: RuntimeConfig,
    pub provider: Arc<dyn Provider>,
    pub sessions: SessionStore,
    pub metrics: Metrics,
    pub keys: KeyStore,
    pub limiter: RateLimiter,
    pub auth_throttle: AuthThrottle,
    pub trusted_proxies: Vec<IpNet>,
    pub drain: Arc<Drain>,
    pub started: Instant,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(cfg: RuntimeConfig, provider: Arc<dyn Provider>) -> Self {
        let trusted_proxies = cfg
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| clawdbot_config::parse_net(p))
            .collect();
        Self(Arc::new(Inner {
            sessions: SessionStore::new(&cfg.sessions),
            metrics: Metrics::new(),
            keys: KeyStore::new(&cfg.auth.api_keys),
            limiter: RateLimiter::new(
                cfg.server.rate_limit.requests_per_second,
                cfg.server.rate_limit.burst,
            ),
            auth_throttle: AuthThrottle::new(
                cfg.auth.max_failures,
                Duration::from_secs(cfg.auth.failure_window_secs),
            ),
            trusted_proxies,
            drain: Arc::new(Drain::default()),
            started: Instant::now(),
            provider,
            cfg,
        }))
    }
}
