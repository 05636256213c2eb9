//! One platform API call with what every platform needs: a pace (the
//! platform's rate limit, waited for rather than exceeded), retries with
//! jittered backoff on transient failures, and errors that never carry a
//! URL (webhook and API URLs hold tokens).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use clawdbot_config::Secret;
use http::StatusCode;
use rand::Rng;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Worth another try: network trouble, 5xx, 429, a platform's "busy"
    /// or rate-limit code, an expired token.
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way again: bad credentials, a bad request.
    #[error("{0}")]
    Fatal(String),
}

impl OutboundError {
    /// The error with its causes (connection refused, timed out, ...), and
    /// without the URL, which may hold a token.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        let e = e.without_url();
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            why.push_str(": ");
            why.push_str(&c.to_string());
            cause = c.source();
        }
        if e.is_builder() {
            Self::Fatal(format!("request not built: {why}"))
        } else {
            Self::Transient(format!("request failed: {why}"))
        }
    }
}

/// At most `n` calls in any `period` (a sliding window): the platforms
/// count per minute or per second, and a burst up to the limit is fine.
pub struct Pace {
    n: usize,
    period: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl Pace {
    pub fn new(n: u32, period: Duration) -> Self {
        Self {
            n: n.max(1) as usize,
            period,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn per_second(n: u32) -> Self {
        Self::new(n, Duration::from_secs(1))
    }

    pub fn per_minute(n: u32) -> Self {
        Self::new(n, Duration::from_secs(60))
    }

    /// Waits for a free slot and takes it. Callers queue on the lock in
    /// arrival order.
    pub async fn wait(&self) {
        let mut sent = self.sent.lock().await;
        let now = Instant::now();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.period)
        {
            sent.pop_front();
        }
        if sent.len() >= self.n
            && let Some(oldest) = sent.pop_front()
        {
            tokio::time::sleep_until(oldest + self.period).await;
        }
        sent.push_back(Instant::now());
    }
}

/// The pause before retry `attempt` (0-based): 500 ms doubling to 10 s,
/// with jitter so replicas do not retry in step; a platform's Retry-After
/// wins when longer.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5)))
        .min(Duration::from_secs(10));
    let jitter = rand::rng().random_range(0.5..1.0);
    let d = base.mul_f64(jitter);
    retry_after.map_or(d, |r| r.max(d))
}

/// Runs `call` up to `attempts` times, waiting on `pace` before each.
pub async fn with_retries<F, Fut, T>(
    attempts: u32,
    pace: &Pace,
    mut call: F,
) -> Result<T, OutboundError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OutboundError>>,
{
    let mut attempt = 0;
    loop {
        pace.wait().await;
        match call().await {
            Ok(v) => return Ok(v),
            Err(OutboundError::Transient(why)) if attempt + 1 < attempts => {
                tracing::debug!(attempt, error = %why, "platform call failed; retrying");
                tokio::time::sleep(backoff(attempt, None)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One platform's calls: the shared HTTP client, a pace for replies and
/// one for robot notifications, and how many tries each call gets.
pub struct Api {
    pub http: reqwest::Client,
    attempts: u32,
    replies: Pace,
    notifications: Pace,
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        attempts: u32,
        replies_per_second: u32,
        notify_per_minute: u32,
    ) -> Self {
        Self {
            http,
            attempts,
            replies: Pace::per_second(replies_per_second),
            notifications: Pace::per_minute(notify_per_minute),
        }
    }

    /// Runs a reply call at the reply pace, with retries.
    pub async fn reply<F, Fut, T>(&self, call: F) -> Result<T, OutboundError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OutboundError>>,
    {
        with_retries(self.attempts, &self.replies, call).await
    }

    /// Runs a notification call at the notification pace, with retries.
    pub async fn notify<F, Fut, T>(&self, call: F) -> Result<T, OutboundError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OutboundError>>,
    {
        with_retries(self.attempts, &self.notifications, call).await
    }
}

/// `path` under the API base URL `base`.
pub fn api_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// A response's status and body; transport errors become `Transient`.
pub async fn send(req: reqwest::RequestBuilder) -> Result<(StatusCode, Bytes), OutboundError> {
    let resp = req.send().await.map_err(OutboundError::from_reqwest)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(OutboundError::from_reqwest)?;
    Ok((status, body))
}

/// HTTP-level verdict, before the platform's own error codes are read.
pub fn check_status(status: StatusCode, body: &[u8]) -> Result<(), OutboundError> {
    if status.is_success() {
        return Ok(());
    }
    let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let why = format!("HTTP {}: {snippet}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(OutboundError::Transient(why))
    } else {
        Err(OutboundError::Fatal(why))
    }
}

/// POSTs `body` as JSON; the answer's body once its status is a success.
pub async fn post_json(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> Result<Bytes, OutboundError> {
    let (status, bytes) = send(http.post(url).json(body)).await?;
    check_status(status, &bytes)?;
    Ok(bytes)
}

/// A token call's answer: the token in `token_field` and its lifetime in
/// seconds in `ttl_field` (7200 when absent), once the status and `check`
/// (the platform's error code) have passed.
pub async fn fetch_token(
    req: reqwest::RequestBuilder,
    check: impl FnOnce(&[u8]) -> Result<(), OutboundError>,
    token_field: &str,
    ttl_field: &str,
) -> Result<(String, Duration), OutboundError> {
    let (status, bytes) = send(req).await?;
    check_status(status, &bytes)?;
    check(&bytes)?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| OutboundError::Transient("token answer is not JSON".into()))?;
    let token = v[token_field]
        .as_str()
        .ok_or_else(|| OutboundError::Fatal(format!("no {token_field} in the token answer")))?;
    let ttl = v[ttl_field].as_u64().unwrap_or(7200);
    Ok((token.to_owned(), Duration::from_secs(ttl)))
}

/// A setting the call cannot do without, or a `Fatal` naming its `key`.
pub fn required<'a, T>(setting: &'a Option<T>, key: &str) -> Result<&'a T, OutboundError> {
    setting
        .as_ref()
        .ok_or_else(|| OutboundError::Fatal(format!("{key} is not set")))
}

/// A credential's text; empty when unset (the platform then refuses it).
pub fn exposed(secret: &Option<Secret>) -> &str {
    secret.as_ref().map(Secret::expose).unwrap_or_default()
}

/// A cached access token, fetched once at a time and renewed a margin
/// before it expires.
pub struct TokenCache {
    held: Mutex<Option<(String, Instant)>>,
    margin: Duration,
}

impl TokenCache {
    pub fn new(margin: Duration) -> Self {
        Self {
            held: Mutex::new(None),
            margin,
        }
    }

    /// The cached token, or a fresh one from `fetch` (token, lifetime).
    /// Concurrent callers wait for the one fetch in progress.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<String, OutboundError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), OutboundError>>,
    {
        let mut held = self.held.lock().await;
        if let Some((token, expires)) = held.as_ref()
            && Instant::now() + self.margin < *expires
        {
            return Ok(token.clone());
        }
        let (token, ttl) = fetch().await?;
        *held = Some((token.clone(), Instant::now() + ttl));
        Ok(token)
    }

    /// Forgets the token (the platform said it is invalid or expired).
    pub async fn invalidate(&self) {
        *self.held.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, short windows: tokio's paused clock needs its `test-util`
    // feature, which would build every tokio dependant twice in `make test`.
    #[tokio::test]
    async fn pace_allows_a_burst_then_waits_for_the_window() {
        let window = Duration::from_millis(400);
        let pace = Pace::new(3, window);
        let t0 = Instant::now();
        for _ in 0..3 {
            pace.wait().await;
        }
        assert!(t0.elapsed() < window / 2, "the burst waited");
        pace.wait().await;
        assert!(t0.elapsed() >= window, "the fourth call did not wait");
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        assert!(backoff(0, None) <= Duration::from_millis(500));
        assert!(backoff(10, None) <= Duration::from_secs(10));
        assert!(backoff(10, None) >= Duration::from_secs(5));
        assert_eq!(
            backoff(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn tokens_are_cached_until_the_margin_and_refetched_after_invalidate() {
        // Renewed 1 s before it expires; each token lives 1.6 s.
        let cache = TokenCache::new(Duration::from_secs(1));
        let fetches = std::cell::Cell::new(0);
        let get = async |fresh: &str| {
            cache
                .get(|| {
                    fetches.set(fetches.get() + 1);
                    async { Ok((fresh.to_string(), Duration::from_millis(1600))) }
                })
                .await
                .unwrap()
        };
        for _ in 0..3 {
            assert_eq!(get("t1").await, "t1");
        }
        assert_eq!(fetches.get(), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(get("t2").await, "t2");
        assert_eq!(fetches.get(), 2);
        cache.invalidate().await;
        assert_eq!(get("t3").await, "t3");
        assert_eq!(fetches.get(), 3);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_fatal_ones_are_not() {
        let pace = Pace::per_second(100);
        for (error, tries) in [
            (OutboundError::Transient("busy".into()), 3),
            (OutboundError::Fatal("bad".into()), 1),
        ] {
            let mut calls = 0;
            let r: Result<(), _> = with_retries(3, &pace, || {
                calls += 1;
                let e = error.clone();
                async { Err(e) }
            })
            .await;
            assert_eq!(r, Err(error));
            assert_eq!(calls, tries);
        }
    }
}
