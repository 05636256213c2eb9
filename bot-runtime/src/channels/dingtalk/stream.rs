//! DingTalk Stream mode: the app dials out, so no public URL is needed.
//!
//! 1. `POST {api_base}/v1.0/gateway/connections/open` with the app's
//!    credentials and subscriptions answers `{"endpoint","ticket"}`; the
//!    ticket is single-use and short-lived, so every session asks anew.
//! 2. The WebSocket at `endpoint?ticket=..` carries JSON frames
//!    `{"specVersion","type","headers":{"topic","messageId",..},"data":"<JSON>"}`.
//! 3. Every frame we handle is acked with
//!    `{"code","headers":{"messageId","contentType"},"message","data"}`:
//!    SYSTEM `ping` echoes its data; SYSTEM `disconnect` ends the session
//!    (a new ticket follows); a robot-message CALLBACK is acked 200 only
//!    after the sink recorded it durably, 500 when it could not, so DingTalk
//!    delivers it again.
//!
//! Replies do not travel over the stream (session webhook or OpenAPI).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clawdbot_config::Secret;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::channels::{Accepted, InboundSink, Verdict};

pub const OPEN_PATH: &str = "/v1.0/gateway/connections/open";
/// The robot-message callback topic.
pub const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
const UA: &str = concat!("clawdbot-bot-runtime/", env!("CARGO_PKG_VERSION"));
/// Largest WebSocket message we read; robot messages are a few KB.
const MAX_MESSAGE: usize = 1 << 20;
/// A session that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Cap on any configured wait, so time arithmetic cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Called with the `clawdbot_webhook_requests_total` outcome of each message.
pub type OutcomeHook = Arc<dyn Fn(&'static str) + Send + Sync>;

#[derive(Clone)]
pub struct DingTalkStreamConfig {
    /// `dingtalk.api_base`, `https://api.dingtalk.com` by default.
    pub api_base: String,
    /// The AppKey (Client ID).
    pub client_id: String,
    /// The AppSecret (Client Secret).
    pub client_secret: Secret,
    /// First reconnect delay; it doubles per failed attempt up to `reconnect_max`.
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    /// WebSocket ping interval; twice this without any traffic ends the session.
    pub keepalive: Duration,
    /// Deadline of the open call and of the WebSocket handshake.
    pub connect_timeout: Duration,
    pub on_outcome: Option<OutcomeHook>,
}

impl DingTalkStreamConfig {
    pub fn new(
        api_base: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Self {
        Self {
            api_base: api_base.into(),
            client_id: client_id.into(),
            client_secret,
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            keepalive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            on_outcome: None,
        }
    }
}

impl std::fmt::Debug for DingTalkStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkStreamConfig")
            .field("api_base", &self.api_base)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("reconnect_base", &self.reconnect_base)
            .field("reconnect_max", &self.reconnect_max)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

/// Keeps the stream up until `shutdown` turns true (or its sender is
/// dropped), handing each robot message to `sink`.
pub async fn run(
    cfg: DingTalkStreamConfig,
    sink: Arc<dyn InboundSink>,
    mut shutdown: watch::Receiver<bool>,
) {
    crate::tls::install_crypto_provider();
    let http = match http_client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "dingtalk: cannot build the HTTP client; stream not started");
            return;
        }
    };
    let client = Client {
        local_ip: local_ip(),
        cfg,
        sink,
        http,
    };
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        match client.session(&mut shutdown).await {
            Ok(Ended::Shutdown) => break,
            // Asked for: reconnect at once, with a fresh ticket.
            Ok(Ended::Disconnect) => failures = 0,
            Ok(Ended::Closed) => tracing::info!("dingtalk: stream closed by the server"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "dingtalk: stream failed"),
        }
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        let delay = backoff_delay(
            failures,
            client.cfg.reconnect_base,
            client.cfg.reconnect_max,
            rand::random(),
        );
        failures = failures.saturating_add(1);
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "dingtalk: reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    tracing::info!("dingtalk: stream stopped");
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
fn after(d: Duration) -> Instant {
    Instant::now() + d.min(MAX_WAIT)
}

/// Resolves once shutdown is asked for, or nobody can ask any more.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn http_client(cfg: &DingTalkStreamConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.connect_timeout)
        .user_agent(UA)
        .build()
}

/// The address our default route leaves from, for the open call's
/// informative `localIp`. A UDP "connect" sends nothing.
fn local_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("8.8.8.8:80")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// A refused handshake, named by its HTTP status.
fn handshake_error(e: tungstenite::Error) -> anyhow::Error {
    match &e {
        tungstenite::Error::Http(resp) => {
            anyhow::anyhow!("handshake refused: HTTP {}", resp.status())
        }
        _ => e.into(),
    }
}

enum Ended {
    Shutdown,
    Disconnect,
    Closed,
}

struct Client {
    cfg: DingTalkStreamConfig,
    sink: Arc<dyn InboundSink>,
    http: reqwest::Client,
    local_ip: String,
}

impl Client {
    async fn session(&self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Ended> {
        let conn = tokio::select! {
            r = self.open() => r?,
            _ = stopped(shutdown) => return Ok(Ended::Shutdown),
        };
        let url = conn.ws_url();
        let safe = safe_url(&conn.endpoint)?;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true);
        let (ws, _) = tokio::select! {
            r = tokio::time::timeout(self.cfg.connect_timeout, connect) => r
                .context("websocket handshake timed out")?
                .map_err(handshake_error)
                .with_context(|| format!("websocket handshake with {safe}"))?,
            _ = stopped(shutdown) => return Ok(Ended::Shutdown),
        };
        tracing::info!(endpoint = %safe, "dingtalk: stream up");
        self.pump(ws, shutdown).await
    }

    async fn open(&self) -> anyhow::Result<Connection> {
        let url = format!("{}{OPEN_PATH}", self.cfg.api_base.trim_end_matches('/'));
        let body = open_body(
            &self.cfg.client_id,
            self.cfg.client_secret.expose(),
            &self.local_ip,
        );
        let resp = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await
            .context("open call")?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("open call body")?;
        if !status.is_success() {
            let code = error_code(&bytes).unwrap_or_default();
            bail!("open call answered HTTP {status} {code}");
        }
        Ok(parse_connection(&bytes)?)
    }

    async fn pump<S>(
        &self,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Ended>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut next_ping = after(self.cfg.keepalive);
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                _ = stopped(shutdown) => {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Shutdown);
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    if last_seen.elapsed() > self.cfg.keepalive.saturating_mul(2) {
                        bail!("no traffic for {:?}", last_seen.elapsed());
                    }
                    ws.send(Message::Ping(Default::default())).await.context("sending ping")?;
                    next_ping = after(self.cfg.keepalive);
                }
                msg = ws.next() => {
                    let Some(msg) = msg else { return Ok(Ended::Closed) };
                    let msg = msg.context("reading")?;
                    last_seen = Instant::now();
                    match msg {
                        Message::Text(text) => {
                            let step = self.on_text(text.as_str()).await;
                            if let Some(reply) = step.reply {
                                ws.send(Message::text(reply)).await.context("sending ack")?;
                            }
                            if step.disconnect {
                                let _ = ws.close(None).await;
                                return Ok(Ended::Disconnect);
                            }
                        }
                        Message::Close(_) => return Ok(Ended::Closed),
                        Message::Binary(_) => tracing::debug!("dingtalk: binary message ignored"),
                        // Pings are answered by tungstenite; pongs only count as traffic.
                        _ => {}
                    }
                }
            }
        }
    }

    async fn on_text(&self, text: &str) -> Step {
        let frame = match parse_frame(text) {
            Ok(f) => f,
            Err(_) => {
                tracing::warn!(len = text.len(), "dingtalk: unreadable frame skipped");
                return Step::none();
            }
        };
        match frame.kind.as_str() {
            "SYSTEM" => on_system(&frame),
            "CALLBACK" if frame.topic == BOT_TOPIC => {
                Step::reply(self.on_bot_message(&frame).await)
            }
            "CALLBACK" => {
                tracing::warn!(
                    topic = frame.topic,
                    "dingtalk: callback topic not subscribed"
                );
                Step::reply(ack(&frame.message_id, 404, "no handler for topic", ""))
            }
            "EVENT" => Step::reply(event_ack(&frame.message_id)),
            other => {
                tracing::warn!(kind = other, "dingtalk: frame of unknown type skipped");
                Step::none()
            }
        }
    }

    /// Parses and records one robot message; returns the ack.
    async fn on_bot_message(&self, frame: &StreamFrame) -> String {
        let message_id = frame.message_id.as_str();
        let (outcome, ok) = match super::parse_message(frame.data.as_bytes()) {
            Ok(Verdict::Message(m)) => {
                let delivery_id = m.delivery_id.clone();
                match self.sink.accept(*m).await {
                    Ok(Accepted::New) => ("accepted", true),
                    Ok(Accepted::Duplicate) => ("duplicate", true),
                    Err(e) => {
                        tracing::warn!(error = %e, message_id, delivery_id,
                            "dingtalk: message not recorded; acking 500 for a redelivery");
                        ("unavailable", false)
                    }
                }
            }
            Ok(Verdict::Ignored(why)) => {
                tracing::debug!(why, message_id, "dingtalk: message ignored");
                ("ignored", true)
            }
            Ok(Verdict::Handshake { .. }) => ("handshake", true),
            Err(rejection) => {
                // Authentic but unreadable: a redelivery would not parse
                // either, so it is acked and dropped.
                tracing::warn!(
                    outcome = rejection.outcome(),
                    message_id,
                    "dingtalk: message refused"
                );
                (rejection.outcome(), true)
            }
        };
        if let Some(hook) = &self.cfg.on_outcome {
            hook(outcome);
        }
        if ok {
            callback_ack(message_id)
        } else {
            ack(message_id, 500, "delivery not recorded", "")
        }
    }
}

fn on_system(frame: &StreamFrame) -> Step {
    match frame.topic.as_str() {
        "ping" => Step::reply(ack(&frame.message_id, 200, "OK", &frame.data)),
        "disconnect" => {
            tracing::info!("dingtalk: server asked to reconnect");
            Step {
                reply: Some(ack(&frame.message_id, 200, "OK", &frame.data)),
                disconnect: true,
            }
        }
        other => {
            tracing::debug!(topic = other, "dingtalk: system frame acked");
            Step::reply(ack(&frame.message_id, 200, "OK", &frame.data))
        }
    }
}

/// What one frame asks of the session.
#[derive(Debug, Default, PartialEq, Eq)]
struct Step {
    reply: Option<String>,
    disconnect: bool,
}

impl Step {
    fn none() -> Self {
        Self::default()
    }

    fn reply(ack: String) -> Self {
        Self {
            reply: Some(ack),
            disconnect: false,
        }
    }
}

/// The open call's body.
pub fn open_body(client_id: &str, client_secret: &str, local_ip: &str) -> Value {
    json!({
        "clientId": client_id,
        "clientSecret": client_secret,
        "subscriptions": [{ "type": "CALLBACK", "topic": BOT_TOPIC }],
        "ua": UA,
        "localIp": local_ip,
    })
}

/// The open call's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Connection {
    pub endpoint: String,
    pub ticket: String,
}

impl Connection {
    /// `endpoint?ticket=..`, the ticket form-encoded.
    pub fn ws_url(&self) -> String {
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let query =
            serde_urlencoded::to_string([("ticket", self.ticket.as_str())]).unwrap_or_default();
        format!("{}{sep}{query}", self.endpoint)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("open answer is not the expected JSON")]
    Malformed,
    #[error("open answer lacks an endpoint or a ticket")]
    Incomplete,
}

pub fn parse_connection(body: &[u8]) -> Result<Connection, OpenError> {
    let conn: Connection = serde_json::from_slice(body).map_err(|_| OpenError::Malformed)?;
    if conn.endpoint.is_empty() || conn.ticket.is_empty() {
        return Err(OpenError::Incomplete);
    }
    Ok(conn)
}

/// The `code` of a DingTalk OpenAPI error body, for the log.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("code")? {
        Value::String(s) => Some(s.chars().take(100).collect()),
        other => Some(other.to_string()),
    }
}

/// `scheme://host/path` of the endpoint, for logs.
fn safe_url(endpoint: &str) -> anyhow::Result<String> {
    let uri: http::Uri = endpoint.parse().context("endpoint does not parse")?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("ws" | "wss")), Some(authority)) => {
            Ok(format!("{scheme}://{authority}{}", uri.path()))
        }
        _ => bail!("endpoint is not a ws or wss URL"),
    }
}

/// The parts of a stream frame we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// `SYSTEM`, `EVENT` or `CALLBACK`.
    pub kind: String,
    pub topic: String,
    pub message_id: String,
    /// The JSON document carried as a string.
    pub data: String,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    data: Value,
}

pub fn parse_frame(text: &str) -> Result<StreamFrame, serde_json::Error> {
    let raw: RawFrame = serde_json::from_str(text)?;
    let header = |k: &str| match raw.headers.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let data = match &raw.data {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // Not the documented shape; keep it as JSON text.
        other => other.to_string(),
    };
    Ok(StreamFrame {
        topic: header("topic"),
        message_id: header("messageId"),
        kind: raw.kind,
        data,
    })
}

/// An ack frame for `message_id`.
pub fn ack(message_id: &str, code: u16, message: &str, data: &str) -> String {
    json!({
        "code": code,
        "headers": { "messageId": message_id, "contentType": "application/json" },
        "message": message,
        "data": data,
    })
    .to_string()
}

/// A robot message recorded: no synchronous answer (replies go out later).
pub fn callback_ack(message_id: &str) -> String {
    ack(message_id, 200, "OK", r#"{"response":null}"#)
}

/// An event consumed.
pub fn event_ack(message_id: &str) -> String {
    ack(
        message_id,
        200,
        "OK",
        r#"{"status":"SUCCESS","message":"success"}"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_body_names_credentials_and_the_bot_topic() {
        let b = open_body("ding123", "s3cret", "10.0.0.2");
        assert_eq!(b["clientId"], "ding123");
        assert_eq!(b["clientSecret"], "s3cret");
        assert_eq!(b["subscriptions"][0]["type"], "CALLBACK");
        assert_eq!(b["subscriptions"][0]["topic"], BOT_TOPIC);
        assert_eq!(b["subscriptions"].as_array().unwrap().len(), 1);
        assert_eq!(b["localIp"], "10.0.0.2");
        assert!(
            b["ua"]
                .as_str()
                .unwrap()
                .starts_with("clawdbot-bot-runtime/")
        );
    }

    #[test]
    fn connection_answer_and_ws_url() {
        let c = parse_connection(
            br#"{"endpoint":"wss://wss-open-connection.dingtalk.com:443/connect","ticket":"a+b/c=="}"#,
        )
        .unwrap();
        assert_eq!(
            c.ws_url(),
            "wss://wss-open-connection.dingtalk.com:443/connect?ticket=a%2Bb%2Fc%3D%3D"
        );
        let c = Connection {
            endpoint: "ws://h/p?x=1".into(),
            ticket: "t 1".into(),
        };
        assert_eq!(c.ws_url(), "ws://h/p?x=1&ticket=t+1");
        assert_eq!(parse_connection(b"nope"), Err(OpenError::Malformed));
        assert_eq!(
            parse_connection(br#"{"endpoint":"","ticket":"t"}"#),
            Err(OpenError::Incomplete)
        );
        assert_eq!(
            parse_connection(br#"{"ticket":"t"}"#),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn safe_url_drops_the_query() {
        assert_eq!(
            safe_url("wss://h:443/connect?ticket=x").unwrap(),
            "wss://h:443/connect"
        );
        assert!(safe_url("https://h/connect").is_err());
        assert!(safe_url("not a url").is_err());
    }

    #[test]
    fn frames_parse_leniently() {
        let f = parse_frame(
            r#"{"specVersion":"1.0","type":"SYSTEM","headers":{"topic":"ping","messageId":"m1","contentType":"application/json","time":1690000000000},"data":"{\"opaque\":\"abc\"}"}"#,
        )
        .unwrap();
        assert_eq!(f.kind, "SYSTEM");
        assert_eq!(f.topic, "ping");
        assert_eq!(f.message_id, "m1");
        assert_eq!(f.data, r#"{"opaque":"abc"}"#);
        let f =
            parse_frame(r#"{"type":"EVENT","headers":{"messageId":7},"data":{"a":1}}"#).unwrap();
        assert_eq!(f.message_id, "7");
        assert_eq!(f.data, r#"{"a":1}"#);
        let f = parse_frame("{}").unwrap();
        assert_eq!((f.kind.as_str(), f.data.as_str()), ("", ""));
        assert!(parse_frame("[1]").is_err());
        assert!(parse_frame("").is_err());
    }

    #[test]
    fn acks_have_the_documented_shape() {
        let a: Value = serde_json::from_str(&callback_ack("m1")).unwrap();
        assert_eq!(
            a,
            json!({"code":200,"headers":{"messageId":"m1","contentType":"application/json"},
                   "message":"OK","data":"{\"response\":null}"})
        );
        let a: Value = serde_json::from_str(&event_ack("e1")).unwrap();
        assert_eq!(a["code"], 200);
        assert_eq!(a["data"], r#"{"status":"SUCCESS","message":"success"}"#);
    }

    #[test]
    fn system_frames() {
        let ping = StreamFrame {
            kind: "SYSTEM".into(),
            topic: "ping".into(),
            message_id: "p1".into(),
            data: r#"{"opaque":"o-1"}"#.into(),
        };
        let step = on_system(&ping);
        assert!(!step.disconnect);
        let a: Value = serde_json::from_str(step.reply.as_deref().unwrap()).unwrap();
        assert_eq!(a["code"], 200);
        assert_eq!(a["headers"]["messageId"], "p1");
        assert_eq!(a["data"], r#"{"opaque":"o-1"}"#);

        let bye = StreamFrame {
            topic: "disconnect".into(),
            ..ping
        };
        assert!(on_system(&bye).disconnect);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(60);
        assert_eq!(backoff_delay(0, base, max, 1.0), base);
        assert_eq!(backoff_delay(0, base, max, 0.0), base / 2);
        assert_eq!(backoff_delay(4, base, max, 1.0), base * 16);
        assert_eq!(backoff_delay(40, base, max, 1.0), max);
        assert_eq!(backoff_delay(u32::MAX, base, max, 0.5), max.mul_f64(0.75));
    }

    #[test]
    fn error_code_is_read_for_logs() {
        assert_eq!(
            error_code(br#"{"code":"InvalidAuthentication","message":"m"}"#).as_deref(),
            Some("InvalidAuthentication")
        );
        assert_eq!(error_code(br#"{"code":400}"#).as_deref(), Some("400"));
        assert_eq!(error_code(b"<html>"), None);
    }
}
