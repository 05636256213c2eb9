//! The chat engine: turns a session turn into a model request and observes
//! every model call (latency, time to first token, tokens, outcome) and
//! every exchange, whichever route it came from.

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::model::{ChatRequest, Chunk, ModelError, Usage};
use crate::sessions::StoredMessage;
use crate::state::AppState;

/// The model request for one web-chat or IM turn: system prompt, the
/// session's recent history, the new message, and the generation defaults.
pub fn session_request(st: &AppState, history: &[StoredMessage], message: &str) -> ChatRequest {
    let mut messages = Vec::with_capacity(history.len() + 2);
    if let Some(sp) = &st.cfg.model.system_prompt {
        messages.push(json!({"role": "system", "content": sp}));
    }
    for m in history {
        messages.push(json!({"role": m.role, "content": m.content}));
    }
    messages.push(json!({"role": "user", "content": message}));
    let mut extra = Map::new();
    apply_generation_defaults(st, &mut extra);
    ChatRequest {
        model: st.cfg.model.name.clone(),
        messages,
        extra,
    }
}

/// Fills `temperature` / `max_tokens` from config where the caller set none.
pub fn apply_generation_defaults(st: &AppState, extra: &mut Map<String, Value>) {
    if let Some(t) = st.cfg.model.temperature
        && !extra.contains_key("temperature")
    {
        extra.insert("temperature".into(), json!(t));
    }
    if let Some(m) = st.cfg.model.max_tokens
        && !extra.contains_key("max_tokens")
        && !extra.contains_key("max_completion_tokens")
    {
        extra.insert("max_tokens".into(), json!(m));
    }
}

/// Observes one model call from start to end. Dropped without `finish`
/// (the caller went away) it records the outcome `cancelled`.
pub struct CallObserver {
    st: AppState,
    provider: &'static str,
    started: Instant,
    first_token: Option<f64>,
    finished: bool,
    pub channel: &'static str,
    pub session_id: Option<String>,
}

impl CallObserver {
    pub fn start(st: &AppState, channel: &'static str, session_id: Option<String>) -> Self {
        Self {
            provider: st.provider.label(),
            st: st.clone(),
            started: Instant::now(),
            first_token: None,
            finished: false,
            channel,
            session_id,
        }
    }

    pub fn on_chunk(&mut self, chunk: &Chunk) {
        if self.first_token.is_none() && !chunk.content.is_empty() {
            self.first_token = Some(self.started.elapsed().as_secs_f64());
        }
    }

    /// The conversation log record of this call's answer. `session_id`
    /// falls back to the exchange's own id for stateless calls.
    pub fn exchange(
        &self,
        model: &str,
        usage: Option<Usage>,
        user_input: String,
        bot_response: String,
    ) -> crate::logs::Exchange {
        let id = crate::logs::new_exchange_id();
        let usage = usage.unwrap_or_default();
        crate::logs::Exchange {
            session_id: self.session_id.clone().unwrap_or_else(|| id.clone()),
            id,
            user_id: None,
            owner: None,
            channel: self.channel.to_owned(),
            user_input,
            bot_response,
            model: model.to_owned(),
            prompt_tokens: i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
            completion_tokens: i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            created_at: crate::logs::now_ms(),
        }
    }

    pub fn finish(mut self, model: &str, result: Result<Option<Usage>, &ModelError>) {
        self.finished = true;
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        let elapsed = self.started.elapsed();
        self.record(outcome, elapsed.as_secs_f64());
        let usage = result.ok().flatten().unwrap_or_default();
        if result.is_ok() {
            self.st.metrics.record_tokens(self.provider, &usage);
        }
        tracing::info!(
            target: "clawdbot::exchange",
            channel = self.channel,
            session_id = self.session_id.as_deref().unwrap_or(""),
            provider = self.provider,
            model,
            outcome,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            latency_ms = elapsed.as_millis() as u64,
            error = result.err().map(|e| e.to_string()),
            "exchange"
        );
    }

    fn record(&self, outcome: &str, secs: f64) {
        let m = &self.st.metrics;
        m.model_duration
            .with_label_values(&[self.provider, outcome])
            .observe(secs);
        if let Some(t) = self.first_token {
            m.model_ttft
                .with_label_values(&[self.provider, outcome])
                .observe(t);
        }
    }
}

impl Drop for CallObserver {
    fn drop(&mut self) {
        if !self.finished {
            self.record("cancelled", self.started.elapsed().as_secs_f64());
            tracing::info!(
                target: "clawdbot::exchange",
                channel = self.channel,
                session_id = self.session_id.as_deref().unwrap_or(""),
                outcome = "cancelled",
                latency_ms = self.started.elapsed().as_millis() as u64,
                "exchange cancelled by the client"
            );
        }
    }
}
