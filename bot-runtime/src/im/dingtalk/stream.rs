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
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::im::InboundSink;
use crate::im::longconn::{
    self, Ended, Handler, LinkConfig, LinkName, LongConnection, Step, USER_AGENT, after,
    unless_stopped,
};

pub const OPEN_PATH: &str = "/v1.0/gateway/connections/open";
/// The robot-message callback topic.
pub const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// Largest WebSocket message we read; robot messages are a few KB.
const MAX_MESSAGE: usize = 1 << 20;
const NAME: LinkName = LinkName {
    platform: "dingtalk",
    link: "stream",
    item: "message",
};

/// Keepalive interval of the stream.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// Keeps the stream up until `shutdown` turns true (or its sender is
/// dropped), handing each robot message to `sink`.
pub async fn run(cfg: LinkConfig, sink: Arc<dyn InboundSink>, mut shutdown: watch::Receiver<bool>) {
    longconn::run(NAME, cfg, &mut shutdown, |cfg, http| Client {
        local_ip: local_ip(),
        cfg,
        sink,
        http,
    })
    .await;
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

struct Client {
    cfg: LinkConfig,
    sink: Arc<dyn InboundSink>,
    http: reqwest::Client,
    local_ip: String,
}

impl LongConnection for Client {
    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Ended> {
        let Some(conn) = unless_stopped(self.open(), shutdown).await else {
            return Ok(Ended::Shutdown);
        };
        let conn = conn?;
        let safe = safe_url(&conn.endpoint)?;
        let ws = longconn::open_websocket(
            &conn.ws_url(),
            &safe,
            MAX_MESSAGE,
            self.cfg.connect_timeout,
            handshake_error,
            shutdown,
        )
        .await?;
        let Some(ws) = ws else {
            return Ok(Ended::Shutdown);
        };
        tracing::info!(endpoint = %safe, "dingtalk: stream up");
        let first_ping = after(self.cfg.heartbeat);
        longconn::pump(ws, self, first_ping, 2, shutdown).await
    }
}

impl Handler for Client {
    fn ping(&self) -> Message {
        Message::Ping(Default::default())
    }

    fn ping_interval(&self) -> Duration {
        self.cfg.heartbeat
    }

    async fn on_message(&mut self, message: Message) -> Step {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            _ => {
                tracing::debug!("dingtalk: binary message ignored");
                Step::none()
            }
        }
    }
}

impl Client {
    async fn open(&self) -> anyhow::Result<Connection> {
        let url = format!("{}{OPEN_PATH}", self.cfg.api_base.trim_end_matches('/'));
        let body = open_body(
            &self.cfg.app_id,
            self.cfg.app_secret.expose(),
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
        let verdict = super::parse_message(frame.data.as_bytes());
        let hook = self.cfg.on_outcome.as_ref();
        if longconn::accept(NAME, verdict, &*self.sink, hook, message_id, None).await {
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
                disconnect: true,
                ..Step::reply(ack(&frame.message_id, 200, "OK", &frame.data))
            }
        }
        other => {
            tracing::debug!(topic = other, "dingtalk: system frame acked");
            Step::reply(ack(&frame.message_id, 200, "OK", &frame.data))
        }
    }
}

/// The open call's body.
pub fn open_body(client_id: &str, client_secret: &str, local_ip: &str) -> Value {
    json!({
        "clientId": client_id,
        "clientSecret": client_secret,
        "subscriptions": [{ "type": "CALLBACK", "topic": BOT_TOPIC }],
        "ua": USER_AGENT,
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
    use proptest::prelude::*;

    use super::*;
    use crate::im::crypto::testutil::flip_bit;

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
        let reply = step.reply.unwrap();
        let a: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
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
    fn error_code_is_read_for_logs() {
        assert_eq!(
            error_code(br#"{"code":"InvalidAuthentication","message":"m"}"#).as_deref(),
            Some("InvalidAuthentication")
        );
        assert_eq!(error_code(br#"{"code":400}"#).as_deref(), Some("400"));
        assert_eq!(error_code(b"<html>"), None);
    }

    const VALID_FRAME: &str = r#"{"specVersion":"1.0","type":"CALLBACK","headers":{"topic":"/v1.0/im/bot/messages/get","messageId":"m1","contentType":"application/json","time":"1690000000000"},"data":"{\"text\":{\"content\":\"hi\"}}"}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The gateway's bytes, random or one bit off a valid frame or
        /// open answer: parsed or refused, never a panic; a system frame
        /// built from them gets a well-formed step.
        #[test]
        fn random_and_mutated_frames_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            pos in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mutated = flip_bit(VALID_FRAME.as_bytes().to_vec(), pos, bit);
            for b in [&bytes, &mutated] {
                if let Ok(f) = parse_frame(&String::from_utf8_lossy(b)) {
                    let _ = on_system(&f);
                }
            }
            let open = br#"{"endpoint":"wss://h/connect","ticket":"t"}"#.to_vec();
            let open = flip_bit(open, pos, bit);
            for b in [&bytes, &open] {
                if let Ok(c) = parse_connection(b) {
                    prop_assert!(!c.endpoint.is_empty() && !c.ticket.is_empty());
                    let _ = c.ws_url();
                }
            }
        }
    }
}
