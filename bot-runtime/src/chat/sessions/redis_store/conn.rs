//! The Redis connection as the store uses it: one multiplexed connection that
//! reconnects by itself, every request bounded by `redis.command_timeout_ms`
//! and counted, so tests can hold the store to its round-trip budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clawdbot_config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

#[derive(Clone)]
pub(super) struct Conn {
    inner: ConnectionManager,
    timeout: Duration,
    trips: Arc<AtomicU64>,
}

impl Conn {
    /// Connects lazily: the runtime starts (and answers 503 for sessions)
    /// while Redis is down, and connects once it is up.
    pub(super) fn new(url: &str, cfg: &RedisConfig) -> anyhow::Result<Self> {
        let client = crate::support::redis::open(url)?;
        let timeout = Duration::from_millis(cfg.command_timeout_ms);
        // Few, quick reconnect attempts: a request never waits longer than
        // `timeout` anyway, and the next request starts a fresh attempt.
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let inner = ConnectionManager::new_lazy_with_config(client, manager_cfg)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis client ({})", e.category()))?;
        Ok(Self {
            inner,
            timeout,
            trips: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Requests sent so far (a pipeline or script call is one).
    pub(super) fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within redis.command_timeout_ms",
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, self.inner.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(
                timeout,
                self.inner.req_packed_commands(pipeline, offset, count),
            )
            .await
            .unwrap_or_else(|_| Err(timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A short account of a failure for clients and logs: what went wrong,
/// without addresses or credentials.
pub(super) fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "connection failed".into()
    } else {
        e.category().to_owned()
    }
}
