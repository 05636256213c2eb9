//! The bot-runtime configuration: one YAML document, every key optional.
//!
//! Defaults are the embedded defaults `bot-runtime` runs on with no file at
//! all. Unknown keys are rejected so a typo never silently does nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Secret;

/// An id a platform's console shows as a number (WeCom's AgentId), written
/// either way in YAML and kept as a string.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    }))
}

/// Root of the bot-runtime configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// HTTP listener, limits, CORS, proxies and shutdown.
    pub server: ServerConfig,
    /// API keys for `/api/*` and `/v1/*`.
    pub auth: AuthConfig,
    /// The model provider and generation defaults.
    pub model: ModelConfig,
    /// Conversation sessions.
    pub sessions: SessionsConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Conversation log database.
    pub database: DatabaseConfig,
    /// How conversation logs are written, spilled and kept.
    pub logs: LogsConfig,
    /// Shared session store.
    pub redis: RedisConfig,
    /// How IM deliveries are recorded, deduplicated and answered (all platforms).
    pub channels: ChannelsConfig,
    /// DingTalk robot.
    pub dingtalk: DingTalkConfig,
    /// Feishu / Lark app.
    pub feishu: FeishuConfig,
    /// WeCom (WeChat Work) app.
    pub wecom: WeComConfig,
    /// Slack app.
    pub slack: SlackConfig,
    /// FAQ entries the bot answers from, before or together with the model.
    pub knowledge: crate::knowledge::KnowledgeConfig,
    /// Fixed replies to fixed phrases, before any FAQ or model.
    pub dialog: crate::knowledge::DialogConfig,
    /// Encryption at rest of conversation text (SM4-GCM or AES-256-GCM).
    pub encryption: crate::encryption::EncryptionConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on (env `CLAWDBOT_LISTEN`).
    pub listen: String,
    /// Serve `/metrics` on its own address and port instead of `listen`
    /// (env `CLAWDBOT_METRICS_LISTEN`), e.g. `0.0.0.0:9090`, so that a
    /// network policy can admit only Prometheus to it and an ingress for the
    /// chat never exposes it. Unset: `/metrics` is on the main port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Directory for local state (SQLite file, spill files). Must be writable.
    pub data_dir: String,
    /// Origins allowed to call the API from a browser, e.g. `https://chat.example.com`.
    /// `*` allows any origin. Empty: no cross-origin access (same-origin pages still work).
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[schemars(range(min = 1024))]
    pub body_limit_bytes: u64,
    /// Per-client request rate limit for `/api/*` and `/v1/*` (webhooks are
    /// authenticated by platform signatures and limited by the platforms).
    pub rate_limit: RateLimitConfig,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-For` header is
    /// trusted to name the real client, e.g. your ingress controller's pod range.
    pub trusted_proxies: Vec<String>,
    /// On SIGTERM: how long in-flight requests and streams may take to finish
    /// before the process exits anyway.
    #[schemars(range(min = 1, max = 3600))]
    pub drain_deadline_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:18789".into(),
            metrics_listen: None,
            data_dir: "./data".into(),
            cors_allowed_origins: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            rate_limit: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
            drain_deadline_secs: 25,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second allowed per client address; 0 turns the limit off.
    #[schemars(range(min = 0.0))]
    pub requests_per_second: f64,
    /// Requests a client may send in a burst above the sustained rate.
    #[schemars(range(min = 1))]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 20.0,
            burst: 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted API keys. Empty: the API is open (fine on a laptop, never on a
    /// shared network). Env `CLAWDBOT_API_KEYS`: comma-separated `KEY` or `KEY:admin`.
    pub api_keys: Vec<ApiKey>,
    /// Failed authentications one client may make within `failure_window_secs`
    /// before it gets 429 for the rest of the window.
    #[schemars(range(min = 1))]
    pub max_failures: u32,
    /// Length of the failed-authentication window in seconds.
    #[schemars(range(min = 1))]
    pub failure_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            max_failures: 10,
            failure_window_secs: 60,
        }
    }
}

/// One API key and what it may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The bearer token clients send as `Authorization: Bearer <key>`.
    pub key: Secret,
    /// `user` keys chat; `admin` keys may also read other keys' sessions and logs.
    #[serde(default)]
    pub scope: Scope,
    /// A label for logs and metrics (never the key itself). Defaults to `key-<n>`.
    #[serde(default)]
    pub name: Option<String>,
}

/// Session owners starting with this are IM users (`im:dingtalk`, ...), not
/// API keys: no key may be named so.
pub const IM_OWNER_PREFIX: &str = "im:";

impl ApiKey {
    /// The name logs, metrics and session ownership use for the key at
    /// `index` (from 0) of `auth.api_keys`.
    pub fn effective_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("key-{}", index + 1))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    User,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `auto` (the default), `openai` (an OpenAI-compatible upstream),
    /// `local` (a GGUF file run in-process by llama.cpp) or `none` (no model:
    /// the knowledge base and dialog rules answer, or the bot says it does
    /// not know). `auto` is `openai` when `endpoint` is set, else `local`
    /// when the model file is present and loads, else `none`; the choice and
    /// its reason are logged and shown by `/health` and `/v1/models`.
    /// Env `MODEL_BACKEND`.
    pub backend: Option<ModelBackend>,
    /// The local model (`backend: local`, or `auto` without an endpoint).
    pub local: LocalModelConfig,
    /// OpenAI-compatible base URL, usually ending in `/v1`
    /// (e.g. `https://api.openai.com/v1`). Env `MODEL_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Bearer token for the endpoint. Env `MODEL_API_KEY`.
    pub api_key: Option<Secret>,
    /// Model name sent upstream and listed by `GET /v1/models`. Env `MODEL_NAME`.
    pub name: String,
    /// Endpoints tried in order when the primary one fails (connect error,
    /// 429, 5xx, timeout, open circuit).
    pub fallbacks: Vec<ModelFallback>,
    /// System prompt put before every web-chat and IM conversation
    /// (OpenAI-compatible callers send their own).
    pub system_prompt: Option<String>,
    /// Sampling temperature used when the caller does not set one.
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Completion token limit: used when the caller sets none, and a cap on
    /// what a caller of `/v1/chat/completions` may ask for (a bigger
    /// `max_tokens` or `max_completion_tokens` is lowered to it).
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u32>,
    /// Deadline in seconds for an upstream answer: the whole body when not
    /// streaming, the response headers when streaming.
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_secs: u64,
    /// TCP/TLS connect timeout in seconds.
    #[schemars(range(min = 1, max = 300))]
    pub connect_timeout_secs: u64,
    /// A stream that sends nothing for this many seconds is cut with an error.
    #[schemars(range(min = 1, max = 3600))]
    pub stream_idle_timeout_secs: u64,
    /// Retries per endpoint on 429, 5xx and connect errors (never once a
    /// stream has started), with jittered exponential backoff.
    #[schemars(range(max = 10))]
    pub max_retries: u32,
    /// First retry delay in milliseconds; doubles each retry, with jitter.
    #[schemars(range(min = 1))]
    pub retry_backoff_ms: u64,
    /// Fail fast while an endpoint is known to be down.
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backend: None,
            local: LocalModelConfig::default(),
            endpoint: None,
            api_key: None,
            name: "default".into(),
            fallbacks: Vec::new(),
            system_prompt: None,
            temperature: None,
            max_tokens: None,
            timeout_secs: 120,
            connect_timeout_secs: 5,
            stream_idle_timeout_secs: 60,
            max_retries: 2,
            retry_backoff_ms: 200,
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

impl ModelConfig {
    /// The backend asked for once the `endpoint` rule of `auto` is applied:
    /// `Openai`, `Local` or `None` as configured, `Openai` for `auto` with an
    /// endpoint, and `Auto` otherwise (local when the model file loads, else
    /// none: decided at start, where the file can be read).
    pub fn effective_backend(&self) -> ModelBackend {
        match self.backend.unwrap_or(ModelBackend::Auto) {
            ModelBackend::Auto if self.endpoint.is_some() => ModelBackend::Openai,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelBackend {
    Auto,
    Openai,
    Local,
    None,
}

/// Where the default model file is, relative to the working directory:
/// `make run` starts in the checkout, whose `models/` the set-up fills.
/// The runtime image sets `MODEL_PATH` to its own copy.
pub const DEFAULT_MODEL_PATH: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The in-process model: one GGUF file, loaded once and shared by every
/// conversation through batched decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LocalModelConfig {
    /// The GGUF file (env `MODEL_PATH`). Its chat template and tokenizer
    /// are read from the file itself.
    pub path: String,
    /// Expected SHA-256 of the file (hex). Set, the file is hashed at start
    /// and a mismatch is refused (with `auto`, the next backend is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Context window of one conversation, in tokens; longer conversations
    /// are cut, keeping the system prompt and the latest turns.
    #[schemars(range(min = 256, max = 131072))]
    pub context_size: u32,
    /// Conversations generated at once (parallel sequences in one batch).
    #[schemars(range(min = 1, max = 64))]
    pub parallel: u32,
    /// Requests that may wait for a free sequence; beyond `parallel + queue`
    /// requests are answered 503 with `Retry-After`.
    #[schemars(range(max = 4096))]
    pub queue: u32,
    /// CPU threads for generation. Unset: the CPUs this process may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU (builds with the `cuda` feature only).
    pub gpu_layers: u32,
    /// Key/value cache precision: `q8_0` (default) halves its memory (94 MB
    /// instead of 188 MB for 4 x 2048 tokens of SmolLM2-135M); `f16` reads
    /// prompts about 1.5x faster (a shorter time to first token) for that
    /// memory. docs/benchmarks.md has both.
    pub kv_cache: KvCache,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvCache {
    #[default]
    Q8_0,
    F16,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_MODEL_PATH.into(),
            sha256: None,
            context_size: 2048,
            parallel: 4,
            queue: 16,
            threads: None,
            gpu_layers: 0,
            kv_cache: KvCache::Q8_0,
        }
    }
}

/// A further OpenAI-compatible endpoint to fall back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFallback {
    /// OpenAI-compatible base URL.
    pub endpoint: String,
    /// Bearer token for this endpoint.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Name of an environment variable holding the bearer token (how the
    /// operator passes a Secret without writing it into the file). Must not
    /// start with `CLAWDBOT_`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model name to request there. Defaults to `model.name`.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed calls that open the circuit.
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Seconds the circuit stays open before one trial call is let through.
    #[schemars(range(min = 1))]
    pub open_secs: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Messages of history (user and assistant) sent to the model with each turn.
    #[schemars(range(min = 0, max = 1000))]
    pub history_messages: usize,
    /// An idle session is forgotten after this many seconds.
    #[schemars(range(min = 1))]
    pub ttl_secs: u64,
    /// A message to a session whose previous turn is still running waits up to
    /// this many seconds, then gets 409.
    #[schemars(range(min = 0, max = 600))]
    pub turn_wait_secs: u64,
    /// Most sessions kept in memory; beyond it new sessions get 503. Not
    /// applied with Redis (`redis.url`), whose own memory limit governs.
    #[schemars(range(min = 1))]
    pub max_sessions: usize,
    /// Bytes of conversation history all in-memory sessions may hold
    /// together; beyond it the least recently used sessions are forgotten.
    /// Not applied with Redis.
    #[schemars(range(min = 65536))]
    pub max_memory_bytes: u64,
    /// Longest chat message accepted, in bytes (UTF-8): a longer one gets 400
    /// naming `message` on the API, and a short refusal on IM channels.
    #[schemars(range(min = 1, max = 1048576))]
    pub max_message_bytes: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            history_messages: 20,
            ttl_secs: 1800,
            turn_wait_secs: 30,
            max_sessions: 100_000,
            max_memory_bytes: 64 * 1024 * 1024,
            max_message_bytes: 32 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter: `info`, `debug`, or per module, e.g.
    /// `info,bot_runtime::model=debug`. `RUST_LOG` wins when set.
    pub level: String,
    /// `json` (one object per line, for log collectors) or `text`.
    pub format: LogFormat,
    /// Log to a file with size-based rotation instead of stdout (hosts
    /// without journald or a log collector).
    // Left out of rendered config while unset, so that the operator's
    // config hash (and every bot's pods) did not change when it was added.
    #[serde(skip_serializing_if = "LogFileConfig::is_default")]
    pub file: LogFileConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            file: LogFileConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogFileConfig {
    /// The log file, e.g. `/var/log/clawdbot/bot-runtime.log`; unset logs
    /// to stdout. Rotated files sit beside it as `NAME.1` (newest) ..
    /// `NAME.<max_files>`. Its folder must exist and be writable.
    pub path: Option<String>,
    /// Rotate once the file has grown past this many MiB (whole lines are
    /// kept together).
    #[schemars(range(min = 1, max = 102400))]
    pub max_size_mb: u64,
    /// Rotated files kept; older ones are deleted.
    #[schemars(range(min = 1, max = 1000))]
    pub max_files: usize,
}

impl LogFileConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for LogFileConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_size_mb: 100,
            max_files: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Conversation log database: `postgres://…`, `mysql://…` (MySQL and
    /// MariaDB) or `sqlite://FILE`; unset uses the embedded default,
    /// `sqlite://<server.data_dir>/clawdbot.db`. Env `DATABASE_URL`.
    /// `/health/ready` runs a query on it.
    pub url: Option<Secret>,
}

/// The conversation log writer: exchanges are queued, written in batches off
/// the request path, and spilled to a local file when the database cannot
/// take them, so an answered exchange is never lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Exchanges older than this many days are deleted, in small batches.
    /// Unset: keep everything.
    #[schemars(range(min = 1))]
    pub retention_days: Option<u32>,
    /// Most exchanges written in one database transaction.
    #[schemars(range(min = 1, max = 5000))]
    pub batch_size: usize,
    /// Longest an exchange waits in the queue for its batch to fill, in milliseconds.
    /// Short by default: small, frequent batches keep the writer's CPU bursts
    /// out of the request latency tail; under load batches fill up anyway.
    #[schemars(range(min = 1, max = 60000))]
    pub flush_interval_ms: u64,
    /// Exchanges held in memory before new ones go to the spill file.
    #[schemars(range(min = 1))]
    pub queue_capacity: usize,
    /// Append-only file (JSON lines, fsynced) holding exchanges the database
    /// could not take; replayed on recovery and at start. Unset:
    /// `<server.data_dir>/log-spill.jsonl`.
    pub spill_file: Option<String>,
    /// Longest pause between retries of a failing database write, in
    /// milliseconds (the pause doubles from 50 ms, with jitter).
    #[schemars(range(min = 50))]
    pub max_retry_backoff_ms: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            retention_days: None,
            batch_size: 200,
            flush_interval_ms: 10,
            queue_capacity: 10_000,
            spill_file: None,
            max_retry_backoff_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis for sessions shared by every replica, e.g. `redis://redis:6379/0`
    /// (`rediss://` for TLS). Env `REDIS_URL`. Unset: sessions live in this
    /// process's memory. `/health/ready` sends it a PING.
    pub url: Option<Secret>,
    /// Prefix of every key the runtime writes, so several bots can share one
    /// Redis database without seeing each other's sessions.
    pub key_prefix: String,
    /// Expiry of a session's turn lock in milliseconds: the longest a replica
    /// that dies mid-turn can keep its session busy. A live replica extends
    /// its lock every third of this while the answer runs.
    #[schemars(range(min = 1000, max = 600000))]
    pub lock_ttl_ms: u64,
    /// TCP connect timeout in milliseconds for each (re)connection attempt.
    #[schemars(range(min = 1, max = 60000))]
    pub connect_timeout_ms: u64,
    /// Deadline in milliseconds for one Redis command or pipeline, including
    /// waiting for a reconnect: requests fail with 503 after it rather than hang.
    #[schemars(range(min = 1, max = 60000))]
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "clawdbot:".into(),
            lock_ttl_ms: 15_000,
            connect_timeout_ms: 1_000,
            command_timeout_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DingTalkMode {
    /// DingTalk calls `POST /webhooks/dingtalk` (needs a public URL).
    #[default]
    Http,
    /// bot-runtime opens DingTalk's Stream-mode connection (no public URL).
    Stream,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DingTalkConfig {
    /// Answer DingTalk messages.
    pub enabled: bool,
    /// `http` (callback) or `stream` (long connection).
    pub mode: DingTalkMode,
    /// The app's AppKey (Client ID).
    pub app_key: Option<String>,
    /// The app's AppSecret (Client Secret).
    pub app_secret: Option<Secret>,
    /// The robot's code, for replies through the robot OpenAPI.
    pub robot_code: Option<String>,
    /// A custom robot's webhook URL, for outbound notifications.
    pub webhook_url: Option<Secret>,
    /// The custom robot's signing secret (`SEC...`).
    pub secret: Option<Secret>,
    /// DingTalk OpenAPI base URL.
    pub api_base: String,
    /// Callbacks whose `timestamp` header is further than this from now are refused.
    #[schemars(range(min = 1, max = 86400))]
    pub timestamp_window_secs: u64,
    /// `markdown`, `text`, or `action_card` (Markdown with one button; needs `action_card_url`).
    pub reply_format: DingTalkReplyFormat,
    /// The ActionCard button's link.
    pub action_card_url: Option<String>,
    /// The ActionCard button's label.
    pub action_card_button: String,
    /// Replies sent per second at most (the rest wait their turn).
    #[schemars(range(min = 1, max = 1000))]
    pub replies_per_second: u32,
    /// Custom-robot notifications per minute at most (DingTalk allows 20).
    #[schemars(range(min = 1, max = 600))]
    pub notify_per_minute: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DingTalkReplyFormat {
    #[default]
    Markdown,
    Text,
    ActionCard,
}

impl Default for DingTalkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: DingTalkMode::Http,
            app_key: None,
            app_secret: None,
            robot_code: None,
            webhook_url: None,
            secret: None,
            api_base: "https://api.dingtalk.com".into(),
            timestamp_window_secs: 3600,
            reply_format: DingTalkReplyFormat::Markdown,
            action_card_url: None,
            action_card_button: "View details".into(),
            replies_per_second: 20,
            notify_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeishuMode {
    /// Feishu calls `POST /webhooks/feishu` (needs a public URL).
    #[default]
    Webhook,
    /// bot-runtime opens Feishu's long connection (no public URL).
    Websocket,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeishuConfig {
    /// Answer Feishu / Lark messages.
    pub enabled: bool,
    /// `webhook` (event callback) or `websocket` (long connection).
    pub mode: FeishuMode,
    /// The app's App ID.
    pub app_id: Option<String>,
    /// The app's App Secret.
    pub app_secret: Option<Secret>,
    /// Event subscription verification token.
    pub verification_token: Option<Secret>,
    /// Event subscription encrypt key (enables AES-256-CBC bodies and signatures).
    /// Required in webhook mode unless `allow_unencrypted` is true.
    pub encrypt_key: Option<Secret>,
    /// Webhook mode without an encrypt key: events then prove nothing but
    /// the verification token they carry in their plaintext body, with no
    /// timestamp to refuse a replay by. Off unless you accept that.
    pub allow_unencrypted: bool,
    /// `https://open.feishu.cn` (Feishu) or `https://open.larksuite.com` (Lark).
    pub api_base: String,
    /// Events whose `X-Lark-Request-Timestamp` is further than this from now are
    /// refused. Long, because Feishu's retries (up to 6 h later) may carry the
    /// first attempt's timestamp; the event-id dedupe stops replays inside it.
    #[schemars(range(min = 1, max = 86400))]
    pub timestamp_window_secs: u64,
    /// `text` or `card` (an interactive card with the answer as Markdown).
    pub reply_format: FeishuReplyFormat,
    /// Replies sent per second at most (Feishu allows 50/s per API).
    #[schemars(range(min = 1, max = 1000))]
    pub replies_per_second: u32,
    /// A custom bot's webhook URL, for outbound notifications.
    pub notify_webhook_url: Option<Secret>,
    /// The custom bot's signing secret.
    pub notify_secret: Option<Secret>,
    /// Custom-bot notifications per minute at most (Feishu allows 100).
    #[schemars(range(min = 1, max = 600))]
    pub notify_per_minute: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeishuReplyFormat {
    #[default]
    Text,
    Card,
}

impl Default for FeishuConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: FeishuMode::Webhook,
            app_id: None,
            app_secret: None,
            verification_token: None,
            encrypt_key: None,
            allow_unencrypted: false,
            api_base: "https://open.feishu.cn".into(),
            timestamp_window_secs: 8 * 3600,
            reply_format: FeishuReplyFormat::Text,
            replies_per_second: 50,
            notify_webhook_url: None,
            notify_secret: None,
            notify_per_minute: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WeComConfig {
    /// Answer WeCom messages.
    pub enabled: bool,
    /// The company's CorpID.
    pub corp_id: Option<String>,
    /// The app's AgentId, as WeCom's console shows it (a number; a string
    /// works too).
    #[serde(deserialize_with = "id_string")]
    #[schemars(extend("type" = ["string", "integer", "null"]))]
    pub agent_id: Option<String>,
    /// The app's Secret.
    pub secret: Option<Secret>,
    /// Callback Token.
    pub token: Option<Secret>,
    /// Callback EncodingAESKey (43 characters).
    pub encoding_aes_key: Option<Secret>,
    /// WeCom API base URL.
    pub api_base: String,
    /// Callbacks whose `timestamp` is further than this from now are refused.
    #[schemars(range(min = 1, max = 86400))]
    pub timestamp_window_secs: u64,
    /// Replies sent per second at most.
    #[schemars(range(min = 1, max = 1000))]
    pub replies_per_second: u32,
    /// A group robot's webhook URL (with its `key`), for outbound notifications.
    pub robot_webhook_url: Option<Secret>,
    /// Group-robot notifications per minute at most (WeCom allows 20).
    #[schemars(range(min = 1, max = 600))]
    pub notify_per_minute: u32,
}

impl Default for WeComConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            corp_id: None,
            agent_id: None,
            secret: None,
            token: None,
            encoding_aes_key: None,
            api_base: "https://qyapi.weixin.qq.com".into(),
            timestamp_window_secs: 3600,
            replies_per_second: 20,
            robot_webhook_url: None,
            notify_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Answer Slack messages.
    pub enabled: bool,
    /// The app's Signing Secret.
    pub signing_secret: Option<Secret>,
    /// The bot token (`xoxb-...`).
    pub bot_token: Option<Secret>,
    /// Slack Web API base URL.
    pub api_base: String,
    /// Requests whose `X-Slack-Request-Timestamp` is further than this from now are refused.
    #[schemars(range(min = 1, max = 86400))]
    pub timestamp_window_secs: u64,
    /// Replies sent per second at most (Slack allows about 1 per channel per second).
    #[schemars(range(min = 1, max = 1000))]
    pub replies_per_second: u32,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            signing_secret: None,
            bot_token: None,
            api_base: "https://slack.com/api".into(),
            timestamp_window_secs: 300,
            replies_per_second: 10,
        }
    }
}

/// IM deliveries: each is recorded durably before the platform gets its ack
/// (a Redis stream when `redis.url` is set, else the log database), answered
/// once by whichever replica claims it, and deduplicated in two steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Largest webhook body accepted, in bytes (413 above it).
    #[schemars(range(min = 1024, max = 10485760))]
    pub body_limit_bytes: usize,
    /// Expiry of the "processing" marker set while a delivery is being
    /// recorded: a replica that dies in between blocks the platform's retry
    /// no longer than this.
    #[schemars(range(min = 1, max = 600))]
    pub processing_ttl_secs: u64,
    /// How long a recorded delivery id is remembered ("done"), so redeliveries
    /// are answered once. Must outlast every platform's retry window (Feishu
    /// retries for 6 h).
    #[schemars(range(min = 3600))]
    pub dedupe_ttl_secs: u64,
    /// A replica answering a delivery renews its claim every third of this;
    /// a claim not renewed for this long (the replica died) is taken over.
    #[schemars(range(min = 5, max = 3600))]
    pub claim_lease_secs: u64,
    /// Deliveries answered at once per replica.
    #[schemars(range(min = 1, max = 256))]
    pub workers: usize,
    /// Attempts at sending one reply before it is logged and counted as failed.
    #[schemars(range(min = 1, max = 20))]
    pub reply_attempts: u32,
    /// Notifications waiting per platform before new ones are refused with 429.
    #[schemars(range(min = 1, max = 100000))]
    pub notify_queue: usize,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 512 * 1024,
            processing_ttl_secs: 30,
            dedupe_ttl_secs: 24 * 3600,
            claim_lease_secs: 60,
            workers: 8,
            reply_attempts: 5,
            notify_queue: 1000,
        }
    }
}
