//! What the long-connection clients (DingTalk Stream mode, Feishu's
//! WebSocket mode) share: the reconnect loop with its jittered backoff, the
//! HTTP client for the endpoint call, the WebSocket handshake, the session
//! loop (keepalive, reading, shutdown) and the hand-over to the sink.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use clawdbot_config::Secret;

use crate::im::{Accepted, InboundSink, Rejection, Verdict};

pub const USER_AGENT: &str = concat!("clawdbot-bot-runtime/", env!("CARGO_PKG_VERSION"));
/// A session that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Cap on any configured wait, so time arithmetic cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Called with the `clawdbot_webhook_requests_total` outcome of each message
/// the sink did not count itself: ignored, handshake, and rejections.
pub type OutcomeHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// What a long-connection client needs: where to connect, with whose
/// credentials, and its timings.
#[derive(Clone)]
pub struct LinkConfig {
    /// `dingtalk.api_base` or `feishu.api_base`.
    pub api_base: String,
    /// The app's AppKey / Client ID (DingTalk) or App ID (Feishu).
    pub app_id: String,
    /// The app's AppSecret (Client Secret) or App Secret.
    pub app_secret: Secret,
    /// First reconnect delay; it doubles per failed attempt up to `reconnect_max`.
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    /// Ping interval (Feishu: until the server's ClientConfig names one);
    /// a few of these without any traffic end the session.
    pub heartbeat: Duration,
    /// Deadline of the endpoint call and of the WebSocket handshake.
    pub connect_timeout: Duration,
    pub on_outcome: Option<OutcomeHook>,
}

impl LinkConfig {
    pub fn new(
        api_base: impl Into<String>,
        app_id: impl Into<String>,
        app_secret: Secret,
        heartbeat: Duration,
    ) -> Self {
        Self {
            api_base: api_base.into(),
            app_id: app_id.into(),
            app_secret,
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            heartbeat,
            connect_timeout: Duration::from_secs(10),
            on_outcome: None,
        }
    }
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("api_base", &self.api_base)
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .field("reconnect_base", &self.reconnect_base)
            .field("reconnect_max", &self.reconnect_max)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// A client WebSocket, plain or TLS.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a client names itself and what it carries in logs:
/// `"{platform}: {link} ..."`, `"{platform}: {item} ..."`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkName {
    pub platform: &'static str,
    pub link: &'static str,
    pub item: &'static str,
}

/// Why a session ended.
pub(crate) enum Ended {
    Shutdown,
    /// The server asked for a reconnect: no backoff built up.
    Disconnect,
    Closed,
}

/// One client: each session connects afresh and runs until it ends.
pub(crate) trait LongConnection: Send {
    fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = anyhow::Result<Ended>> + Send;
}

/// A client's whole life: builds it from `cfg` and an HTTP client for its
/// open calls, then keeps it connected until `shutdown` turns true (or its
/// sender is dropped).
pub(crate) async fn run<C: LongConnection>(
    name: LinkName,
    cfg: LinkConfig,
    shutdown: &mut watch::Receiver<bool>,
    build: impl FnOnce(LinkConfig, reqwest::Client) -> C,
) {
    let Some(http) = http_client(name, cfg.connect_timeout) else {
        return;
    };
    let (base, max) = (cfg.reconnect_base, cfg.reconnect_max);
    let mut client = build(cfg, http);
    keep_connected(&mut client, name, base, max, shutdown).await;
}

/// Runs sessions of `conn` until `shutdown` turns true (or its sender is
/// dropped), waiting [`backoff_delay`] between them.
async fn keep_connected(
    conn: &mut impl LongConnection,
    name: LinkName,
    reconnect_base: Duration,
    reconnect_max: Duration,
    shutdown: &mut watch::Receiver<bool>,
) {
    let LinkName { platform, link, .. } = name;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        match conn.session(shutdown).await {
            Ok(Ended::Shutdown) => break,
            // Asked for: reconnect at once, with fresh credentials.
            Ok(Ended::Disconnect) => failures = 0,
            Ok(Ended::Closed) => tracing::info!("{platform}: {link} closed by the server"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "{platform}: {link} failed"),
        }
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        let delay = backoff_delay(failures, reconnect_base, reconnect_max, rand::random());
        failures = failures.saturating_add(1);
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "{platform}: reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(shutdown) => break,
        }
    }
    tracing::info!("{platform}: {link} stopped");
}

/// Delay before reconnect attempt `attempt` (0-based): `base * 2^attempt`
/// capped at `max`, then scaled into `[1/2, 1]` of itself by `jitter`
/// (0..1) so a fleet does not reconnect in lockstep.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(30)));
    exp.min(max)
        .min(MAX_WAIT)
        .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// `now + d`, with `d` capped so an absurd setting cannot overflow.
pub(crate) fn after(d: Duration) -> Instant {
    Instant::now() + d.min(MAX_WAIT)
}

/// Resolves once shutdown is asked for, or nobody can ask any more.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `fut`'s output, or `None` when shutdown is asked for first.
pub(crate) async fn unless_stopped<T>(
    fut: impl Future<Output = T>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<T> {
    tokio::select! {
        v = fut => Some(v),
        _ = stopped(shutdown) => None,
    }
}

/// The client for the endpoint call; `None` (logged) when it cannot be built.
pub(crate) fn http_client(name: LinkName, connect_timeout: Duration) -> Option<reqwest::Client> {
    let built = super::platform_client()
        .connect_timeout(connect_timeout)
        .timeout(connect_timeout)
        .build();
    match built {
        Ok(c) => Some(c),
        Err(e) => {
            let LinkName { platform, link, .. } = name;
            tracing::error!(error = %e, "{platform}: cannot build the HTTP client; {link} not started");
            None
        }
    }
}

/// The WebSocket handshake with `url` (`safe_url` names it in errors),
/// reading messages of at most `max_message` bytes; `None` on shutdown.
pub(crate) async fn open_websocket(
    url: &str,
    safe_url: &str,
    max_message: usize,
    timeout: Duration,
    handshake_error: fn(tungstenite::Error) -> anyhow::Error,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Socket>> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true);
    let Some(r) = unless_stopped(tokio::time::timeout(timeout, connect), shutdown).await else {
        return Ok(None);
    };
    let (ws, _) = r
        .context("websocket handshake timed out")?
        .map_err(handshake_error)
        .with_context(|| format!("websocket handshake with {safe_url}"))?;
    Ok(Some(ws))
}

/// What one message asks of the session.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    pub reply: Option<Message>,
    /// The server asked us to reconnect (after the reply).
    pub disconnect: bool,
}

impl Step {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn reply(message: impl Into<Message>) -> Self {
        Self {
            reply: Some(message.into()),
            disconnect: false,
        }
    }
}

/// A session's side of the socket: its keepalive and its messages.
pub(crate) trait Handler: Send {
    /// Our keepalive ping.
    fn ping(&self) -> Message;
    fn ping_interval(&self) -> Duration;
    /// One text or binary message.
    fn on_message(&mut self, message: Message) -> impl Future<Output = Step> + Send;
}

/// Reads `ws` until it closes or shutdown is asked for, handing messages to
/// `handler`. Pings go out from `first_ping` on, every
/// [`Handler::ping_interval`]; `silent_rounds` of it without any traffic
/// end the session.
pub(crate) async fn pump(
    mut ws: Socket,
    handler: &mut impl Handler,
    first_ping: Instant,
    silent_rounds: u32,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let mut next_ping = first_ping;
    let mut last_seen = Instant::now();
    loop {
        tokio::select! {
            _ = stopped(shutdown) => {
                let _ = ws.close(None).await;
                return Ok(Ended::Shutdown);
            }
            _ = tokio::time::sleep_until(next_ping) => {
                if last_seen.elapsed() > handler.ping_interval().saturating_mul(silent_rounds) {
                    bail!("no traffic for {:?}", last_seen.elapsed());
                }
                ws.send(handler.ping()).await.context("sending ping")?;
                next_ping = after(handler.ping_interval());
            }
            msg = ws.next() => {
                let Some(msg) = msg else { return Ok(Ended::Closed) };
                let msg = msg.context("reading")?;
                last_seen = Instant::now();
                match msg {
                    Message::Text(_) | Message::Binary(_) => {
                        let step = handler.on_message(msg).await;
                        if let Some(reply) = step.reply {
                            ws.send(reply).await.context("sending answer")?;
                        }
                        if step.disconnect {
                            let _ = ws.close(None).await;
                            return Ok(Ended::Disconnect);
                        }
                    }
                    Message::Close(_) => return Ok(Ended::Closed),
                    // tungstenite answers pings; pongs only count as traffic.
                    _ => {}
                }
            }
        }
    }
}

/// Hands one parsed delivery to `sink` and reports its outcome to `hook`.
/// False when the sink could not record it: the answer then asks the
/// platform to deliver it again.
pub(crate) async fn accept(
    name: LinkName,
    verdict: Result<Verdict, Rejection>,
    sink: &dyn InboundSink,
    hook: Option<&OutcomeHook>,
    message_id: &str,
    trace_id: Option<&str>,
) -> bool {
    let LinkName { platform, item, .. } = name;
    let (outcome, recorded) = match verdict {
        Ok(Verdict::Message(m)) => {
            let delivery_id = m.delivery_id.clone();
            match sink.accept(*m).await {
                Ok(Accepted::New) => ("accepted", true),
                Ok(Accepted::Duplicate) => ("duplicate", true),
                // Only signed webhooks are bound; a frame never is.
                Ok(Accepted::Replayed) => ("replayed", true),
                Err(e) => {
                    tracing::warn!(error = %e, message_id, trace_id, delivery_id,
                        "{platform}: {item} not recorded; answering 500 for a redelivery");
                    ("unavailable", false)
                }
            }
        }
        Ok(Verdict::Ignored(why)) => {
            tracing::debug!(why, message_id, trace_id, "{platform}: {item} ignored");
            ("ignored", true)
        }
        Ok(Verdict::Handshake { .. }) => ("handshake", true),
        Err(rejection) => {
            // Authentic but unreadable: a redelivery would not parse
            // either, so it is answered as done and dropped.
            tracing::warn!(
                outcome = rejection.outcome(),
                message_id,
                trace_id,
                "{platform}: {item} refused"
            );
            (rejection.outcome(), true)
        }
    };
    // The sink counts what it records (accepted, duplicate, unavailable).
    if let Some(hook) = hook
        && !matches!(outcome, "accepted" | "duplicate" | "unavailable")
    {
        hook(outcome);
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(60);
        assert_eq!(backoff_delay(0, base, max, 1.0), base);
        assert_eq!(backoff_delay(0, base, max, 0.0), base / 2);
        assert_eq!(backoff_delay(4, base, max, 1.0), base * 16);
        assert_eq!(backoff_delay(40, base, max, 1.0), max);
        assert_eq!(backoff_delay(u32::MAX, base, max, 0.5), max.mul_f64(0.75));
        assert_eq!(backoff_delay(u32::MAX, base, max, 0.0), max / 2);
        // Out-of-range jitter is clamped, never negative or beyond the cap.
        assert_eq!(backoff_delay(10, base, max, 7.0), max);
        assert_eq!(backoff_delay(10, base, max, -1.0), max / 2);
    }
}
