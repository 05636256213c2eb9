//! The chat engine: turns a session turn into a model request and observes
//! every model call (latency, time to first token, tokens, outcome) and
//! every exchange, whichever route it came from.

use std::time::Instant;

use clawdbot_config::ModelConfig;
use serde_json::{Map, Value, json};

use crate::chat::model::{ChatRequest, Chunk, ModelError, Usage};
use crate::chat::sessions::StoredMessage;
use crate::telemetry::metrics::ModelMetrics;

/// The model request for one web-chat or IM turn: system prompt, the
/// session's recent history, the new message, and the generation defaults.
pub fn session_request(
    model: &ModelConfig,
    history: &[StoredMessage],
    message: &str,
) -> ChatRequest {
    let mut messages = Vec::with_capacity(history.len() + 2);
    if let Some(sp) = &model.system_prompt {
        messages.push(json!({"role": "system", "content": sp}));
    }
    for m in history {
        messages.push(json!({"role": m.role, "content": m.content}));
    }
    messages.push(json!({"role": "user", "content": message}));
    let mut extra = Map::new();
    apply_generation_defaults(model, &mut extra);
    ChatRequest {
        model: model.name.clone(),
        messages,
        extra,
    }
}

/// Fills `temperature` from config where the caller set none, and makes the
/// configured `max_tokens` a cap: set when the caller asked for no limit,
/// and a bigger `max_tokens` or `max_completion_tokens` is lowered to it
/// (the operator, not each API client, decides what an answer may cost).
pub fn apply_generation_defaults(model: &ModelConfig, extra: &mut Map<String, Value>) {
    if let Some(t) = model.temperature
        && !extra.contains_key("temperature")
    {
        extra.insert("temperature".into(), json!(t));
    }
    let Some(cap) = model.max_tokens else {
        return;
    };
    let mut limited = false;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = extra.get_mut(key)
            && let Some(asked) = v.as_u64()
        {
            limited = true;
            if asked > u64::from(cap) {
                *v = json!(cap);
            }
        }
    }
    if !limited {
        extra.insert("max_tokens".into(), json!(cap));
    }
}

/// Observes one model call from start to end. Dropped without `finish`
/// (the caller went away) it records the outcome `cancelled`.
pub struct CallObserver {
    metrics: ModelMetrics,
    provider: &'static str,
    started: Instant,
    first_token: Option<f64>,
    finished: bool,
    pub channel: &'static str,
    pub session_id: Option<String>,
}

impl CallObserver {
    /// `provider`: the provider's label, as in the model metrics.
    pub fn start(
        metrics: ModelMetrics,
        provider: &'static str,
        channel: &'static str,
        session_id: Option<String>,
    ) -> Self {
        Self {
            provider,
            metrics,
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
    ) -> crate::convlog::Exchange {
        let id = crate::convlog::new_exchange_id();
        let usage = usage.unwrap_or_default();
        crate::convlog::Exchange {
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
            created_at: crate::support::timefmt::now_ms(),
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
            self.metrics
                .record_tokens(self.provider, usage.prompt_tokens, usage.completion_tokens);
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
        let m = &self.metrics;
        m.duration
            .with_label_values(&[self.provider, outcome])
            .observe(secs);
        if let Some(t) = self.first_token {
            m.ttft
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(extra: Value, temperature: Option<f64>, cap: Option<u32>) -> Value {
        let model = ModelConfig {
            temperature,
            max_tokens: cap,
            ..ModelConfig::default()
        };
        let Value::Object(mut extra) = extra else {
            panic!("an object")
        };
        apply_generation_defaults(&model, &mut extra);
        Value::Object(extra)
    }

    #[test]
    fn configured_max_tokens_is_a_cap() {
        // No limit asked: the configured one.
        assert_eq!(with(json!({}), None, Some(500)), json!({"max_tokens": 500}));
        // Asked for more: lowered, whichever field the client used.
        assert_eq!(
            with(json!({"max_tokens": 4000}), None, Some(500)),
            json!({"max_tokens": 500})
        );
        assert_eq!(
            with(json!({"max_completion_tokens": 9000}), None, Some(500)),
            json!({"max_completion_tokens": 500})
        );
        // Asked for less: kept.
        assert_eq!(
            with(json!({"max_completion_tokens": 50}), None, Some(500)),
            json!({"max_completion_tokens": 50})
        );
        // No cap configured: the client decides.
        assert_eq!(
            with(json!({"max_tokens": 4000}), None, None),
            json!({"max_tokens": 4000})
        );
    }

    #[test]
    fn configured_temperature_is_a_default() {
        assert_eq!(
            with(json!({}), Some(0.2), None),
            json!({"temperature": 0.2})
        );
        assert_eq!(
            with(json!({"temperature": 1.0}), Some(0.2), None),
            json!({"temperature": 1.0})
        );
    }
}
