use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A message's text: its `content` string, or its text parts joined by
/// newlines (images and other parts have none).
pub fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A chat request in OpenAI's vocabulary. `messages` and `extra` are kept as
/// JSON so fields we do not interpret (tools, response_format, ...) reach the
/// upstream untouched.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    /// Every other request field, forwarded as-is.
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// Where an answer that did not come from a model came from: an FAQ entry
/// (`faq`) or a dialog rule (`rule`). Shown under the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub kind: &'static str,
    pub id: String,
    pub title: String,
}

/// A whole answer. `raw` is the upstream's JSON body when there is one, so
/// the OpenAI-compatible route can hand back exactly what the model said
/// (tool calls, logprobs, ...).
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub model: String,
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub raw: Option<Bytes>,
    pub source: Option<Source>,
}

/// One piece of a streamed answer; `raw` is the upstream's chunk JSON.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub model: Option<String>,
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// False for the usage-only chunk (`"choices": []`).
    pub has_choices: bool,
    pub raw: Option<Bytes>,
    /// Set on the first chunk of an answer from the FAQ or a dialog rule.
    pub source: Option<Source>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// Connect failures, open circuits, rate limits that outlived the retries.
    #[error("model upstream unavailable: {0}")]
    Unavailable(String),
    #[error("model upstream timed out: {0}")]
    Timeout(String),
    /// Every generation slot and queue place of the local model is taken:
    /// 503 with Retry-After, the client tries again shortly.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    /// The upstream failed (5xx, broken stream, unreadable answer).
    #[error("model upstream failed: {0}")]
    BadGateway(String),
    /// The upstream refused the request itself (400, 413, 422): usually a
    /// field the caller sent. `body` is the upstream's answer.
    #[error("model upstream rejected the request (HTTP {status}): {message}")]
    Rejected {
        status: u16,
        message: String,
        body: Bytes,
    },
}

impl ModelError {
    /// Metric label.
    pub fn outcome(&self) -> &'static str {
        match self {
            ModelError::Unavailable(_) => "unavailable",
            ModelError::Timeout(_) => "timeout",
            ModelError::Busy { .. } => "busy",
            ModelError::BadGateway(_) => "upstream_error",
            ModelError::Rejected { .. } => "rejected",
        }
    }
}

/// The parts of an upstream chunk or completion we read; everything else
/// passes through in `raw`.
#[derive(Deserialize)]
pub(crate) struct WireChunk {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<WireChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub(crate) struct WireChoice {
    #[serde(default)]
    pub delta: Option<WireMessage>,
    #[serde(default)]
    pub message: Option<WireMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireMessage {
    #[serde(default)]
    pub content: Option<String>,
}
