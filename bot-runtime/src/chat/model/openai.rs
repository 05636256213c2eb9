//! Client for OpenAI-compatible upstreams: pooled connections, deadlines,
//! jittered retries on 429/5xx/connect errors (never once a stream has
//! begun), ordered fallback endpoints and a circuit breaker per endpoint.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use clawdbot_config::ModelConfig;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use reqwest::header::{self, HeaderValue};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::timeout;

use super::sse::SseDecoder;
use super::types::WireChunk;
use super::{Breaker, ChatRequest, Chunk, ChunkStream, Completion, ModelError, Provider};

/// Cap on an upstream error body we read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Cap on a Retry-After we are willing to wait inside one request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

struct Endpoint {
    url: String,
    /// Host and port only: for messages and logs, never the key.
    label: String,
    auth: Option<HeaderValue>,
    model: String,
    breaker: Breaker,
}

pub struct OpenAiUpstream {
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    models: Vec<String>,
    timeout: Duration,
    idle_timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    reason: String,
}

#[derive(Serialize)]
struct UpstreamBody<'a> {
    model: &'a str,
    messages: &'a [Value],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct StreamOptions {
    // Always asked for: token metrics and logs need it even when the caller
    // did not ask (the caller only gets the usage chunk if it did).
    include_usage: bool,
}

/// What one attempt's failure means for the next step.
enum Step {
    Retry(ModelError, Option<Duration>),
    TryNextEndpoint(ModelError),
    Fail(ModelError),
}

impl OpenAiUpstream {
    pub fn new(cfg: &ModelConfig, reason: &str) -> anyhow::Result<Self> {
        crate::support::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .user_agent(concat!("clawdbot-bot-runtime/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let breaker = || {
            Breaker::new(
                cfg.circuit_breaker.failure_threshold,
                Duration::from_secs(cfg.circuit_breaker.open_secs),
            )
        };
        let primary = cfg
            .endpoint
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("model.endpoint is required for the openai backend"))?;
        let mut endpoints = vec![Endpoint::new(
            primary,
            cfg.api_key.as_ref().map(|k| k.expose()),
            &cfg.name,
            breaker(),
        )?];
        for f in &cfg.fallbacks {
            let key = fallback_key(f, |var| std::env::var(var).ok())?;
            endpoints.push(Endpoint::new(
                &f.endpoint,
                key.as_deref(),
                f.name.as_deref().unwrap_or(&cfg.name),
                breaker(),
            )?);
        }
        Ok(Self {
            client,
            endpoints,
            models: vec![cfg.name.clone()],
            reason: reason.to_owned(),
            timeout: Duration::from_secs(cfg.timeout_secs),
            idle_timeout: Duration::from_secs(cfg.stream_idle_timeout_secs),
            max_retries: cfg.max_retries,
            backoff: Duration::from_millis(cfg.retry_backoff_ms),
        })
    }

    fn jittered_backoff(&self, attempt: u32) -> Duration {
        let full = self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let ms = full.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }

    /// Sends the request through the endpoints in order until one answers
    /// with a success status. For a stream only the headers are awaited here.
    async fn send(&self, req: &ChatRequest, stream: bool) -> Result<reqwest::Response, ModelError> {
        let mut last = None;
        'endpoints: for ep in &self.endpoints {
            if !ep.breaker.allow() {
                last.get_or_insert(ModelError::Unavailable(format!(
                    "{}: circuit open after repeated failures",
                    ep.label
                )));
                continue;
            }
            let body = Bytes::from(
                serde_json::to_vec(&UpstreamBody {
                    model: &ep.model,
                    messages: &req.messages,
                    stream,
                    stream_options: stream.then_some(StreamOptions {
                        include_usage: true,
                    }),
                    extra: &req.extra,
                })
                .map_err(|e| ModelError::BadGateway(format!("cannot encode request: {e}")))?,
            );
            let mut attempt = 0;
            loop {
                let mut request = self
                    .client
                    .post(&ep.url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(auth) = &ep.auth {
                    request = request.header(header::AUTHORIZATION, auth.clone());
                }
                let next = match timeout(self.timeout, request.send()).await {
                    Err(_) => Step::TryNextEndpoint(ModelError::Timeout(format!(
                        "{}: no response within {} s",
                        ep.label,
                        self.timeout.as_secs()
                    ))),
                    Ok(Err(e)) if e.is_connect() => Step::Retry(
                        ModelError::Unavailable(format!("{}: cannot connect", ep.label)),
                        None,
                    ),
                    Ok(Err(e)) => Step::Retry(
                        ModelError::BadGateway(format!("{}: {}", ep.label, without_url(&e))),
                        None,
                    ),
                    Ok(Ok(resp)) if resp.status().is_success() => {
                        ep.breaker.record_success();
                        return Ok(resp);
                    }
                    Ok(Ok(resp)) => classify_status(ep, resp).await,
                };
                match next {
                    Step::Retry(err, retry_after) => {
                        ep.breaker.record_failure();
                        tracing::warn!(endpoint = %ep.label, attempt, error = %err, "model call failed");
                        last = Some(err);
                        attempt += 1;
                        if attempt > self.max_retries || ep.breaker.is_open() {
                            continue 'endpoints;
                        }
                        let wait = self.jittered_backoff(attempt);
                        let wait = retry_after
                            .filter(|r| *r <= MAX_RETRY_AFTER)
                            .map_or(wait, |r| r.max(wait));
                        tokio::time::sleep(wait).await;
                    }
                    Step::TryNextEndpoint(err) => {
                        if matches!(err, ModelError::Timeout(_)) {
                            ep.breaker.record_failure();
                        }
                        tracing::warn!(endpoint = %ep.label, error = %err, "model endpoint failed, trying the next");
                        last = Some(err);
                        continue 'endpoints;
                    }
                    Step::Fail(err) => return Err(err),
                }
            }
        }
        Err(last.unwrap_or_else(|| ModelError::Unavailable("no model endpoint configured".into())))
    }

    async fn complete_inner(&self, req: &ChatRequest) -> Result<Completion, ModelError> {
        let started = tokio::time::Instant::now();
        let resp = self.send(req, false).await?;
        let left = self.timeout.saturating_sub(started.elapsed());
        let body = match timeout(left, resp.bytes()).await {
            Err(_) => {
                return Err(ModelError::Timeout(format!(
                    "answer not complete within {} s",
                    self.timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                return Err(ModelError::BadGateway(format!(
                    "reading the answer: {}",
                    without_url(&e)
                )));
            }
            Ok(Ok(b)) => b,
        };
        let wire: WireChunk = serde_json::from_slice(&body)
            .map_err(|e| ModelError::BadGateway(format!("unreadable answer: {e}")))?;
        let first = wire.choices.into_iter().next();
        Ok(Completion {
            model: wire.model.unwrap_or_else(|| req.model.clone()),
            content: first
                .as_ref()
                .and_then(|c| c.message.as_ref())
                .and_then(|m| m.content.clone())
                .unwrap_or_default(),
            finish_reason: first.and_then(|c| c.finish_reason),
            usage: wire.usage,
            raw: Some(body),
            source: None,
        })
    }
}

/// A fallback's key: inline, or read from the environment variable it names
/// (a missing variable is a start-up error, not a silent anonymous call).
fn fallback_key(
    f: &clawdbot_config::ModelFallback,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<String>> {
    match (&f.api_key, &f.api_key_env) {
        (Some(k), _) => Ok(Some(k.expose().to_owned())),
        (None, Some(var)) => lookup(var).map(Some).ok_or_else(|| {
            anyhow::anyhow!(
                "model fallback {}: environment variable {var} is not set",
                f.endpoint
            )
        }),
        (None, None) => Ok(None),
    }
}

impl Endpoint {
    fn new(
        base: &str,
        api_key: Option<&str>,
        model: &str,
        breaker: Breaker,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/chat/completions"))?;
        let label = format!(
            "{}{}",
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        let auth = api_key
            .filter(|k| !k.is_empty())
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self {
            url: url.to_string(),
            label,
            auth,
            model: model.to_owned(),
            breaker,
        })
    }
}

/// reqwest's Display includes the URL; ours may carry a query with secrets.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "upstream");
    }
    s
}

async fn classify_status(ep: &Endpoint, resp: reqwest::Response) -> Step {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_capped(resp).await;
    let message = upstream_message(&body);
    let at = &ep.label;
    match status {
        429 => Step::Retry(
            ModelError::Unavailable(format!("{at}: rate limited (HTTP 429): {message}")),
            retry_after,
        ),
        408 | 500..=599 => Step::Retry(
            ModelError::BadGateway(format!("{at}: HTTP {status}: {message}")),
            retry_after,
        ),
        401 | 403 => Step::TryNextEndpoint(ModelError::BadGateway(format!(
            "{at}: the upstream refused the configured credentials (HTTP {status})"
        ))),
        404 => Step::TryNextEndpoint(ModelError::BadGateway(format!(
            "{at}: HTTP 404 (check model.endpoint and model.name): {message}"
        ))),
        _ => Step::Fail(ModelError::Rejected {
            status,
            message,
            body,
        }),
    }
}

async fn read_capped(resp: reqwest::Response) -> Bytes {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            let room = MAX_ERROR_BODY - out.len();
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = timeout(Duration::from_secs(5), read).await;
    Bytes::from(out)
}

/// The `error.message` of an OpenAI-shaped error body, else its first bytes.
fn upstream_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let msg = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
        })
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let msg = msg.trim();
    match msg.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &msg[..i]),
        None if msg.is_empty() => "(empty body)".into(),
        None => msg.to_owned(),
    }
}

struct StreamState {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: SseDecoder,
    pending: VecDeque<Bytes>,
    idle: Duration,
    finished: bool,
}

fn parse_chunk(data: &[u8]) -> Result<Chunk, ModelError> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| ModelError::BadGateway(format!("unreadable stream chunk: {e}")))?;
    if let Some(err) = value.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        return Err(ModelError::BadGateway(format!(
            "upstream error mid-stream: {msg}"
        )));
    }
    let wire: WireChunk = serde_json::from_value(value)
        .map_err(|e| ModelError::BadGateway(format!("unreadable stream chunk: {e}")))?;
    let has_choices = !wire.choices.is_empty();
    let first = wire.choices.into_iter().next();
    Ok(Chunk {
        model: wire.model,
        content: first
            .as_ref()
            .and_then(|c| c.delta.as_ref())
            .and_then(|d| d.content.clone())
            .unwrap_or_default(),
        finish_reason: first.and_then(|c| c.finish_reason),
        usage: wire.usage,
        has_choices,
        raw: Some(Bytes::copy_from_slice(data)),
        source: None,
    })
}

fn chunk_stream(resp: reqwest::Response, idle: Duration) -> ChunkStream {
    let state = StreamState {
        body: resp.bytes_stream().boxed(),
        decoder: SseDecoder::default(),
        pending: VecDeque::new(),
        idle,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            if let Some(data) = st.pending.pop_front() {
                if data.as_ref() == b"[DONE]" {
                    return None;
                }
                let item = parse_chunk(&data);
                st.finished = item.is_err();
                return Some((item, st));
            }
            let err = match timeout(st.idle, st.body.next()).await {
                Err(_) => ModelError::Timeout(format!("stream idle for {} s", st.idle.as_secs())),
                Ok(None) => {
                    ModelError::BadGateway("the upstream ended the stream without [DONE]".into())
                }
                Ok(Some(Err(e))) => {
                    ModelError::BadGateway(format!("the stream broke: {}", without_url(&e)))
                }
                Ok(Some(Ok(bytes))) => match st.decoder.push(&bytes) {
                    Ok(events) => {
                        st.pending.extend(events);
                        continue;
                    }
                    Err(e) => ModelError::BadGateway(e.to_string()),
                },
            };
            st.finished = true;
            return Some((Err(err), st));
        }
    }))
}

impl Provider for OpenAiUpstream {
    fn label(&self) -> &'static str {
        "openai"
    }

    fn circuits(&self) -> Vec<(String, bool)> {
        self.endpoints
            .iter()
            .map(|e| (e.label.clone(), e.breaker.is_open()))
            .collect()
    }

    fn models(&self) -> &[String] {
        &self.models
    }

    fn reason(&self) -> &str {
        &self.reason
    }

    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        self.complete_inner(req).boxed()
    }

    fn stream<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ModelError>> {
        async move {
            let resp = self.send(req, true).await?;
            Ok(chunk_stream(resp, self.idle_timeout))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_keys_come_inline_or_from_the_named_variable() {
        let mut f = clawdbot_config::ModelFallback {
            endpoint: "http://b/v1".into(),
            api_key: None,
            api_key_env: Some("MODEL_FALLBACK_1_API_KEY".into()),
            name: None,
        };
        let env = |v: &str| (v == "MODEL_FALLBACK_1_API_KEY").then(|| "k1".to_owned());
        assert_eq!(fallback_key(&f, env).unwrap().as_deref(), Some("k1"));
        assert!(
            fallback_key(&f, |_| None)
                .unwrap_err()
                .to_string()
                .contains("MODEL_FALLBACK_1_API_KEY")
        );
        f.api_key_env = None;
        assert_eq!(fallback_key(&f, env).unwrap(), None);
    }

    #[test]
    fn upstream_messages_are_extracted_and_capped() {
        assert_eq!(
            upstream_message(br#"{"error":{"message":"bad tools"}}"#),
            "bad tools"
        );
        assert_eq!(upstream_message(b"plain text"), "plain text");
        assert_eq!(upstream_message(b""), "(empty body)");
        assert!(upstream_message("x".repeat(1000).as_bytes()).len() < 320);
    }

    #[test]
    fn chunks_keep_their_raw_json_and_read_content() {
        let c = parse_chunk(br#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#).unwrap();
        assert_eq!(c.content, "Hi");
        assert!(c.has_choices);
        let u = parse_chunk(
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .unwrap();
        assert!(!u.has_choices);
        assert_eq!(u.usage.unwrap().total_tokens, 5);
        assert!(parse_chunk(br#"{"error":{"message":"boom"}}"#).is_err());
        assert!(parse_chunk(b"not json").is_err());
    }

    #[test]
    fn the_body_forwards_unknown_fields_and_forces_usage_on_streams() {
        let mut extra = Map::new();
        extra.insert("tools".into(), serde_json::json!([{"type": "function"}]));
        let body = UpstreamBody {
            model: "m",
            messages: &[serde_json::json!({"role": "user", "content": "x"})],
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            extra: &extra,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["tools"][0]["type"], "function");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
    }
}
