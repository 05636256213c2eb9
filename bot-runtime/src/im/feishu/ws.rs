//! Feishu / Lark long connection: the app dials out, so no public URL is
//! needed (self-built apps only).
//!
//! 1. `POST {api_base}/callback/ws/endpoint` `{"AppID","AppSecret"}` answers
//!    `{"code":0,"data":{"URL","ClientConfig":{..,"PingInterval"}}}`.
//! 2. The WebSocket at `URL` carries protobuf [`Frame`]s: method 0 control
//!    (our `ping`, the server's `pong`, which may carry a new ClientConfig),
//!    method 1 data (`type` `event`, split into `sum` parts numbered `seq`
//!    under one `message_id`).
//! 3. Each event is answered on its own frame, payload `{"code":200}` plus a
//!    `biz_rt` header. We answer only after the sink has recorded the message
//!    durably; a sink failure answers 500 so the platform delivers it again.
//!
//! No signature or encryption on this channel: the connection is the proof.
//! Every error or close ends the session; the next one asks for a fresh
//! endpoint after a jittered exponential backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::frame::{self, Frame, METHOD_CONTROL, METHOD_DATA};
use crate::im::InboundSink;
use crate::im::longconn::{
    self, Ended, Handler, LinkConfig, LinkName, LongConnection, Step, unless_stopped,
};

pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";

/// The endpoint call's `code` for success.
const CODE_OK: i64 = 0;
/// Largest WebSocket message we read; events are split well below this.
const MAX_MESSAGE: usize = 4 << 20;
/// How long the parts of a split event wait for their siblings.
const PART_TTL: Duration = Duration::from_secs(10);
/// Most parts one event may be split into.
const MAX_PARTS: usize = 256;
/// Most bytes held across all unfinished split events.
const MAX_PENDING_BYTES: usize = 16 << 20;
const NAME: LinkName = LinkName {
    platform: "feishu",
    link: "long connection",
    item: "event",
};

/// Ping interval until the server's ClientConfig names one.
pub const HEARTBEAT: Duration = Duration::from_secs(120);

/// Keeps the long connection up until `shutdown` turns true (or its sender
/// is dropped), handing each message event to `sink`.
pub async fn run(cfg: LinkConfig, sink: Arc<dyn InboundSink>, mut shutdown: watch::Receiver<bool>) {
    longconn::run(NAME, cfg, &mut shutdown, |cfg, http| Client {
        ping_interval: cfg.heartbeat,
        service_id: 0,
        cfg,
        sink,
        http,
        parts: Reassembly::default(),
    })
    .await;
}

/// A refused handshake with the reasons Feishu puts in its headers.
fn handshake_error(e: tungstenite::Error) -> anyhow::Error {
    let tungstenite::Error::Http(resp) = &e else {
        return e.into();
    };
    let h = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect::<String>()
    };
    anyhow::anyhow!(
        "handshake refused: HTTP {}, handshake-status {:?}, handshake-msg {:?}, autherrcode {:?}",
        resp.status(),
        h("handshake-status"),
        h("handshake-msg"),
        h("handshake-autherrcode"),
    )
}

struct Client {
    cfg: LinkConfig,
    sink: Arc<dyn InboundSink>,
    http: reqwest::Client,
    ping_interval: Duration,
    /// The current connection's service, named in our pings.
    service_id: i32,
    parts: Reassembly,
}

impl LongConnection for Client {
    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Ended> {
        let Some(endpoint) = unless_stopped(self.fetch_endpoint(), shutdown).await else {
            return Ok(Ended::Shutdown);
        };
        let endpoint = endpoint?;
        if let Some(conf) = endpoint.client_config {
            self.apply(conf);
        }
        let target = ConnTarget::parse(&endpoint.url)?;
        let ws = longconn::open_websocket(
            &endpoint.url,
            &target.safe_url,
            MAX_MESSAGE,
            self.cfg.connect_timeout,
            handshake_error,
            shutdown,
        )
        .await?;
        let Some(ws) = ws else {
            return Ok(Ended::Shutdown);
        };
        tracing::info!(endpoint = %target.safe_url, conn_id = %target.conn_id, "feishu: long connection up");
        self.service_id = target.service_id;
        // The first ping goes out at once, as the SDKs do; three silent
        // rounds mean the connection is dead even if TCP has not noticed.
        longconn::pump(ws, self, Instant::now(), 3, shutdown).await
    }
}

impl Handler for Client {
    fn ping(&self) -> Message {
        Message::Binary(frame::encode(&ping_frame(self.service_id)).into())
    }

    fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    async fn on_message(&mut self, message: Message) -> Step {
        match message {
            Message::Binary(bytes) => match self.on_frame(&bytes).await {
                Some(answer) => Step::reply(answer),
                None => Step::none(),
            },
            _ => {
                tracing::debug!("feishu: text message ignored");
                Step::none()
            }
        }
    }
}

impl Client {
    async fn fetch_endpoint(&self) -> anyhow::Result<Endpoint> {
        let url = format!("{}{ENDPOINT_PATH}", self.cfg.api_base.trim_end_matches('/'));
        let body = serde_json::json!({
            "AppID": self.cfg.app_id,
            "AppSecret": self.cfg.app_secret.expose(),
        });
        let resp = self
            .http
            .post(&url)
            .header("locale", "zh")
            .json(&body)
            .send()
            .await
            .context("endpoint call")?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("endpoint call body")?;
        if !status.is_success() {
            bail!("endpoint call answered HTTP {status}");
        }
        Ok(parse_endpoint(&bytes)?)
    }

    fn apply(&mut self, conf: ClientConfig) {
        if let Some(every) = conf.ping_interval() {
            self.ping_interval = every;
        }
    }

    /// Handles one binary message; returns the encoded answer frame, if any.
    async fn on_frame(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let frame = match frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, len = bytes.len(), "feishu: undecodable frame skipped");
                return None;
            }
        };
        match frame.method {
            METHOD_CONTROL => {
                self.on_control(&frame);
                None
            }
            METHOD_DATA => self.on_data(frame).await,
            other => {
                tracing::debug!(method = other, "feishu: frame of unknown method skipped");
                None
            }
        }
    }

    fn on_control(&mut self, frame: &Frame) {
        if frame.header("type") != Some("pong") || frame.payload.is_empty() {
            return;
        }
        match serde_json::from_slice::<ClientConfig>(&frame.payload) {
            Ok(conf) => self.apply(conf),
            Err(_) => tracing::warn!("feishu: pong with an unreadable ClientConfig"),
        }
    }

    async fn on_data(&mut self, mut frame: Frame) -> Option<Vec<u8>> {
        let started = Instant::now();
        let message_id = frame.header("message_id").unwrap_or_default().to_owned();
        let sum = header_number(&frame, "sum").unwrap_or(1);
        let seq = header_number(&frame, "seq").unwrap_or(0);
        let part = std::mem::take(&mut frame.payload);
        let payload = if sum > 1 {
            self.parts
                .push(&message_id, sum, seq, part, std::time::Instant::now())?
        } else {
            part
        };
        let kind = frame.header("type").unwrap_or_default();
        if kind != "event" {
            // Cards and anything newer: not subscribed, left unanswered as
            // the SDKs do.
            tracing::debug!(kind, message_id, "feishu: data frame not handled");
            return None;
        }
        let code = self
            .on_event(&payload, &message_id, frame.header("trace_id"))
            .await;
        Some(frame::encode(&answer(frame, code, started.elapsed())))
    }

    /// Parses and records one event; returns the status to answer with.
    async fn on_event(&self, payload: &[u8], message_id: &str, trace_id: Option<&str>) -> u16 {
        let verdict = super::parse_event(payload, None);
        let hook = self.cfg.on_outcome.as_ref();
        if longconn::accept(NAME, verdict, &*self.sink, hook, message_id, trace_id).await {
            200
        } else {
            500
        }
    }
}

fn header_number(frame: &Frame, key: &str) -> Option<usize> {
    frame.header(key)?.trim().parse().ok()
}

/// Our ping: a control frame naming the connection's service.
pub fn ping_frame(service_id: i32) -> Frame {
    let mut f = Frame {
        service: service_id,
        method: METHOD_CONTROL,
        ..Frame::default()
    };
    f.push_header("type", "ping");
    f
}

/// The answer to a data frame: the same frame (ids, service, headers) with
/// the handling time in `biz_rt` and `{"code":..}` as its payload.
pub fn answer(mut frame: Frame, code: u16, took: Duration) -> Frame {
    frame.push_header("biz_rt", took.as_millis().to_string());
    frame.payload = serde_json::json!({ "code": code }).to_string().into_bytes();
    frame
}

/// What the endpoint call hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub client_config: Option<ClientConfig>,
}

/// Connection settings from the server (seconds). Only the ping interval is
/// followed; reconnects use our own backoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ClientConfig {
    #[serde(rename = "ReconnectCount", default)]
    pub reconnect_count: i64,
    #[serde(rename = "ReconnectInterval", default)]
    pub reconnect_interval: i64,
    #[serde(rename = "ReconnectNonce", default)]
    pub reconnect_nonce: i64,
    #[serde(rename = "PingInterval", default)]
    pub ping_interval: i64,
}

impl ClientConfig {
    /// The ping interval, when the server named a sane one.
    pub fn ping_interval(&self) -> Option<Duration> {
        u64::try_from(self.ping_interval)
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .map(Duration::from_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint answer is not the expected JSON")]
    Malformed,
    #[error("endpoint call refused: code {code}: {msg}")]
    Refused { code: i64, msg: String },
    #[error("endpoint answer has no URL")]
    NoUrl,
}

#[derive(Deserialize)]
struct EndpointResp {
    code: i64,
    #[serde(default)]
    msg: String,
    data: Option<EndpointData>,
}

#[derive(Deserialize)]
struct EndpointData {
    #[serde(rename = "URL", default)]
    url: String,
    #[serde(rename = "ClientConfig")]
    client_config: Option<ClientConfig>,
}

/// Reads the endpoint call's JSON answer.
pub fn parse_endpoint(body: &[u8]) -> Result<Endpoint, EndpointError> {
    let resp: EndpointResp = serde_json::from_slice(body).map_err(|_| EndpointError::Malformed)?;
    if resp.code != CODE_OK {
        return Err(EndpointError::Refused {
            code: resp.code,
            msg: resp.msg,
        });
    }
    let data = resp.data.ok_or(EndpointError::NoUrl)?;
    if data.url.is_empty() {
        return Err(EndpointError::NoUrl);
    }
    Ok(Endpoint {
        url: data.url,
        client_config: data.client_config,
    })
}

/// What the WebSocket URL tells us, and a form of it fit for logs (its
/// query carries the connection's credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnTarget {
    pub service_id: i32,
    pub conn_id: String,
    pub safe_url: String,
}

impl ConnTarget {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().context("endpoint URL does not parse")?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            bail!("endpoint URL is not absolute");
        };
        if !matches!(scheme, "ws" | "wss") {
            bail!("endpoint URL scheme {scheme} is not ws or wss");
        }
        let query: Vec<(String, String)> =
            serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
        let get = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        Ok(Self {
            service_id: get("service_id").and_then(|s| s.parse().ok()).unwrap_or(0),
            conn_id: get("device_id").unwrap_or_default().to_owned(),
            safe_url: format!("{scheme}://{authority}{}", uri.path()),
        })
    }
}

/// Joins split events. Parts wait at most [`PART_TTL`]; what would exceed
/// the limits is dropped (the platform redelivers unanswered events).
#[derive(Debug, Default)]
pub struct Reassembly {
    pending: HashMap<String, Partial>,
    bytes: usize,
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    since: std::time::Instant,
}

impl Reassembly {
    /// Stores part `seq` of `sum`; returns the whole payload once every
    /// part is in.
    pub fn push(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        part: Vec<u8>,
        now: std::time::Instant,
    ) -> Option<Vec<u8>> {
        self.expire(now);
        if sum > MAX_PARTS || seq >= sum {
            tracing::warn!(
                message_id,
                sum,
                seq,
                "feishu: event part out of range dropped"
            );
            return None;
        }
        if self.bytes + part.len() > MAX_PENDING_BYTES {
            tracing::warn!(
                message_id,
                "feishu: too many pending event parts; part dropped"
            );
            return None;
        }
        let entry = self
            .pending
            .entry(message_id.to_owned())
            .or_insert_with(|| Partial::new(sum, now));
        if entry.parts.len() != sum {
            // Another split of the same id: start over.
            self.bytes -= entry.bytes;
            *entry = Partial::new(sum, now);
        }
        let added = part.len();
        if let Some(old) = entry.parts[seq].replace(part) {
            entry.bytes -= old.len();
            self.bytes -= old.len();
        }
        entry.bytes += added;
        self.bytes += added;
        if entry.parts.iter().any(Option::is_none) {
            return None;
        }
        let done = self.pending.remove(message_id)?;
        self.bytes -= done.bytes;
        Some(done.parts.into_iter().flatten().flatten().collect())
    }

    fn expire(&mut self, now: std::time::Instant) {
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now.saturating_duration_since(p.since) < PART_TTL;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl Partial {
    fn new(sum: usize, now: std::time::Instant) -> Self {
        Self {
            parts: vec![None; sum],
            bytes: 0,
            since: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::im::crypto::testutil::flip_bit;

    #[test]
    fn endpoint_answer_parses() {
        let body = br#"{"code":0,"msg":"ok","data":{"URL":"wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7300&access_key=secret&service_id=33554678&ticket=t","ClientConfig":{"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30,"PingInterval":120}}}"#;
        let ep = parse_endpoint(body).unwrap();
        assert!(ep.url.starts_with("wss://msg-frontier.feishu.cn/ws/v2?"));
        let conf = ep.client_config.unwrap();
        assert_eq!(conf.reconnect_count, -1);
        assert_eq!(conf.ping_interval(), Some(Duration::from_secs(120)));
        let target = ConnTarget::parse(&ep.url).unwrap();
        assert_eq!(target.service_id, 33554678);
        assert_eq!(target.conn_id, "7300");
        assert_eq!(target.safe_url, "wss://msg-frontier.feishu.cn/ws/v2");
    }

    #[test]
    fn endpoint_refusals_and_garbage() {
        assert_eq!(
            parse_endpoint(br#"{"code":1000040350,"msg":"exceed connection limit"}"#),
            Err(EndpointError::Refused {
                code: 1000040350,
                msg: "exceed connection limit".into()
            })
        );
        assert_eq!(
            parse_endpoint(br#"{"code":0,"data":{}}"#),
            Err(EndpointError::NoUrl)
        );
        assert_eq!(parse_endpoint(br#"{"code":0}"#), Err(EndpointError::NoUrl));
        assert_eq!(parse_endpoint(b"<html>"), Err(EndpointError::Malformed));
        let ep = parse_endpoint(br#"{"code":0,"data":{"URL":"ws://h/p"}}"#).unwrap();
        assert_eq!(ep.client_config, None);
    }

    #[test]
    fn odd_ping_intervals_are_not_followed() {
        let conf = |s| ClientConfig {
            ping_interval: s,
            ..ClientConfig::default()
        };
        assert_eq!(conf(0).ping_interval(), None);
        assert_eq!(conf(-5).ping_interval(), None);
        assert_eq!(conf(100_000).ping_interval(), None);
        assert_eq!(conf(90).ping_interval(), Some(Duration::from_secs(90)));
        let from_pong: ClientConfig = serde_json::from_str(r#"{"PingInterval":45}"#).unwrap();
        assert_eq!(from_pong.ping_interval(), Some(Duration::from_secs(45)));
    }

    #[test]
    fn conn_target_rejects_non_websocket_urls() {
        assert!(ConnTarget::parse("https://h/p").is_err());
        assert!(ConnTarget::parse("/relative").is_err());
        let t = ConnTarget::parse("ws://127.0.0.1:9/ws?service_id=nope").unwrap();
        assert_eq!(t.service_id, 0);
        assert_eq!(t.conn_id, "");
    }

    #[test]
    fn ping_and_answer_frames() {
        let ping = ping_frame(42);
        assert_eq!(ping.method, METHOD_CONTROL);
        assert_eq!(ping.service, 42);
        assert_eq!(ping.header("type"), Some("ping"));

        let mut event = Frame {
            seq_id: 3,
            log_id: 4,
            service: 42,
            method: METHOD_DATA,
            payload: b"{...}".to_vec(),
            ..Frame::default()
        };
        event.push_header("type", "event");
        event.push_header("message_id", "m1");
        let a = answer(event, 200, Duration::from_millis(12));
        assert_eq!(
            (a.seq_id, a.log_id, a.service, a.method),
            (3, 4, 42, METHOD_DATA)
        );
        assert_eq!(a.header("message_id"), Some("m1"));
        assert_eq!(a.header("biz_rt"), Some("12"));
        assert_eq!(a.payload, br#"{"code":200}"#);
        let a = answer(Frame::default(), 500, Duration::ZERO);
        assert_eq!(a.payload, br#"{"code":500}"#);
    }

    #[test]
    fn refused_handshakes_name_feishus_reasons() {
        let resp = http::Response::builder()
            .status(403)
            .header("handshake-status", "514")
            .header("handshake-msg", "auth failed")
            .header("handshake-autherrcode", "1000040350")
            .body(None)
            .unwrap();
        let e = handshake_error(tungstenite::Error::Http(Box::new(resp))).to_string();
        assert!(e.contains("403"), "{e}");
        assert!(e.contains("\"514\""), "{e}");
        assert!(e.contains("auth failed"), "{e}");
        assert!(e.contains("1000040350"), "{e}");
        let e = handshake_error(tungstenite::Error::ConnectionClosed).to_string();
        assert!(!e.contains("handshake refused"), "{e}");
    }

    #[test]
    fn reassembly_joins_parts_in_any_order() {
        let now = std::time::Instant::now();
        let mut r = Reassembly::default();
        assert_eq!(r.push("m", 3, 2, b"c".to_vec(), now), None);
        assert_eq!(r.push("m", 3, 0, b"a".to_vec(), now), None);
        assert_eq!(r.push("other", 2, 0, b"x".to_vec(), now), None);
        assert_eq!(r.push("m", 3, 1, b"b".to_vec(), now), Some(b"abc".to_vec()));
        assert_eq!(r.pending(), 1);
        assert_eq!(
            r.push("other", 2, 1, b"y".to_vec(), now),
            Some(b"xy".to_vec())
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn reassembly_drops_bad_and_stale_parts() {
        let now = std::time::Instant::now();
        let mut r = Reassembly::default();
        assert_eq!(r.push("m", 2, 2, b"x".to_vec(), now), None);
        assert_eq!(r.push("m", MAX_PARTS + 1, 0, b"x".to_vec(), now), None);
        assert_eq!(r.pending(), 0);
        // A part older than the TTL is forgotten.
        assert_eq!(r.push("m", 2, 0, b"a".to_vec(), now), None);
        let later = now + PART_TTL + Duration::from_secs(1);
        assert_eq!(r.push("m", 2, 1, b"b".to_vec(), later), None);
        assert_eq!(
            r.push("m", 2, 0, b"a".to_vec(), later),
            Some(b"ab".to_vec())
        );
        // A repeated part replaces the first copy.
        assert_eq!(r.push("n", 2, 0, b"old".to_vec(), now), None);
        assert_eq!(r.push("n", 2, 0, b"new".to_vec(), now), None);
        assert_eq!(
            r.push("n", 2, 1, b"!".to_vec(), now),
            Some(b"new!".to_vec())
        );
        // A different split of the same id starts over.
        assert_eq!(r.push("k", 2, 0, b"a".to_vec(), now), None);
        assert_eq!(r.push("k", 3, 0, b"1".to_vec(), now), None);
        assert_eq!(r.push("k", 3, 1, b"2".to_vec(), now), None);
        assert_eq!(r.push("k", 3, 2, b"3".to_vec(), now), Some(b"123".to_vec()));
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn reassembly_caps_pending_bytes() {
        let now = std::time::Instant::now();
        let mut r = Reassembly::default();
        let big = vec![0u8; MAX_PENDING_BYTES / 2 + 1];
        assert_eq!(r.push("a", 2, 0, big.clone(), now), None);
        assert_eq!(r.push("b", 2, 0, big, now), None);
        assert_eq!(r.pending(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The endpoint call's answer, random or one bit off a valid one:
        /// a typed error or an endpoint with a URL, never a panic.
        #[test]
        fn random_and_mutated_endpoint_answers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            pos in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let valid = br#"{"code":0,"msg":"ok","data":{"URL":"wss://h/ws/v2?device_id=7&service_id=3","ClientConfig":{"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30,"PingInterval":120}}}"#;
            let mutated = flip_bit(valid.to_vec(), pos, bit);
            for b in [&bytes, &mutated] {
                if let Ok(ep) = parse_endpoint(b) {
                    prop_assert!(!ep.url.is_empty());
                    let _ = ConnTarget::parse(&ep.url);
                    if let Some(c) = ep.client_config {
                        let _ = c.ping_interval();
                    }
                }
            }
        }
    }
}
