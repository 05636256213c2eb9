//! `POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format,
//! stateless. Upstream answers pass through byte for byte, so fields we do
//! not interpret (tool calls, logprobs, ...) reach the client intact.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::chat::engine::{CallObserver, apply_generation_defaults};
use crate::chat::model::{ChatRequest, Chunk, ChunkStream, Completion, ModelError, Usage};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::JsonBody;
use crate::state::AppState;
use crate::telemetry::metrics::StreamGauge;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A validated `/v1/chat/completions` request.
#[derive(Debug)]
pub struct OpenAiCall {
    pub req: ChatRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Checks the fields we rely on; everything else is forwarded untouched.
pub fn parse_request(body: Value, models: &[String]) -> ApiResult<OpenAiCall> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::invalid(
            "body",
            "the request body must be a JSON object",
        ));
    };
    let model = match obj.remove("model") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "model",
                "you must provide a model parameter",
            ));
        }
        Some(Value::String(m)) => m,
        Some(_) => return Err(ApiError::invalid("model", "model must be a string")),
    };
    if !models.contains(&model) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{model}` does not exist here; available: {}",
                models.join(", ")
            ),
        )
        .with_param("model")
        .with_code("model_not_found"));
    }
    let messages = match obj.remove("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "messages is required"));
        }
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "messages must contain at least one message",
            ));
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(ApiError::invalid("messages", "messages must be an array")),
    };
    for (i, m) in messages.iter().enumerate() {
        check_message(i, m)?;
    }
    let stream = match obj.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::invalid("stream", "stream must be a boolean")),
    };
    let include_usage = match obj.remove("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options.include_usage",
                    "include_usage must be a boolean",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options must be an object",
            ));
        }
    };
    match obj.get("temperature") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be a number from 0 to 2",
            ));
        }
    }
    // One answer per request: `n` > 1 would multiply the cost of a call
    // the operator's limits were set for.
    match obj.get("n") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "n",
                "n must be 1: this server returns one choice per request",
            ));
        }
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    key,
                    format!("{key} must be a positive integer"),
                ));
            }
        }
    }
    Ok(OpenAiCall {
        req: ChatRequest {
            model,
            messages,
            extra: obj,
        },
        stream,
        include_usage,
    })
}

fn check_message(i: usize, m: &Value) -> ApiResult<()> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(m) = m else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            "each message must be an object",
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
        Some(Value::String(r)) => {
            return Err(ApiError::invalid(
                at("role"),
                format!("unknown role `{r}`; expected one of {}", ROLES.join(", ")),
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                at("role"),
                "role is required and must be a string",
            ));
        }
    };
    match m.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if !p.get("type").is_some_and(Value::is_string) {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content[{j}].type"),
                        "each content part must be an object with a string `type`",
                    ));
                }
            }
            Ok(())
        }
        None | Some(Value::Null) if role == "assistant" => Ok(()),
        None | Some(Value::Null) => Err(ApiError::invalid(at("content"), "content is required")),
        Some(_) => Err(ApiError::invalid(
            at("content"),
            "content must be a string or an array of content parts",
        )),
    }
}

/// Who and what a stateless call's log record carries.
struct LogContext {
    owner: Option<String>,
    /// OpenAI's optional `user` field: the caller's end user.
    user_id: Option<String>,
    user_input: String,
}

impl LogContext {
    fn new(caller: &Caller, req: &ChatRequest) -> Self {
        Self {
            owner: caller.key_name.clone(),
            user_id: req
                .extra
                .get("user")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .map(|u| u.chars().take(256).collect()),
            user_input: last_user_text(&req.messages),
        }
    }

    /// Queues the record; returns once it is safe to acknowledge the reply.
    async fn submit(
        self,
        st: &AppState,
        obs: &CallObserver,
        model: &str,
        usage: Option<Usage>,
        reply: String,
    ) {
        let mut ex = obs.exchange(model, usage, self.user_input, reply);
        ex.owner = self.owner;
        ex.user_id = self.user_id;
        st.logs.submit(ex).await;
    }
}

/// The text of the last `user` message: a string, or its text parts joined.
fn last_user_text(messages: &[Value]) -> String {
    let Some(m) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    crate::chat::model::message_text(m)
}

pub async fn chat_completions(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let mut call = parse_request(body, st.provider.models())?;
    apply_generation_defaults(&st.cfg.model, &mut call.req.extra);
    let log = LogContext::new(&caller, &call.req);
    let obs = st.observe_call("openai", None);
    if call.stream {
        // Failures before the first token still get a real status code.
        return match st.provider.stream(&call.req).await {
            Ok(stream) => Ok(stream_completion(st, obs, stream, call, log)),
            Err(e) => {
                obs.finish(&call.req.model, Err(&e));
                Err(client_error(e))
            }
        };
    }
    match st.provider.complete(&call.req).await {
        Ok(done) => {
            log.submit(&st, &obs, &done.model, done.usage, done.content.clone())
                .await;
            obs.finish(&done.model, Ok(done.usage));
            Ok(match done.raw {
                Some(raw) => ([(header::CONTENT_TYPE, "application/json")], raw).into_response(),
                None => Json(synthesized_completion(&done)).into_response(),
            })
        }
        Err(e) => {
            obs.finish(&call.req.model, Err(&e));
            Err(client_error(e))
        }
    }
}

/// On this route an upstream 4xx for the request itself is the caller's
/// to fix, so it keeps its status and message.
fn client_error(e: ModelError) -> ApiError {
    match e {
        ModelError::Rejected {
            status, message, ..
        } => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request_error",
            format!("the model rejected the request: {message}"),
        )
        .with_code("upstream_rejected_request"),
        other => other.into(),
    }
}

fn stream_completion(
    st: AppState,
    mut obs: CallObserver,
    mut stream: ChunkStream,
    call: OpenAiCall,
    log: LogContext,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let work = st.drain.track();
    tokio::spawn(async move {
        let _work = work;
        let _gauge = StreamGauge::start(&st.metrics.active_streams);
        let mut model = call.req.model.clone();
        let synth = Synth::new(&model);
        let mut usage = None;
        let mut first = true;
        let mut reply = String::new();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = tx.closed() => return,
            };
            let chunk = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    obs.finish(&model, Err(&e));
                    let _ = tx.send(error_frame(e)).await;
                    return;
                }
            };
            obs.on_chunk(&chunk);
            if let Some(m) = chunk.model.as_deref().filter(|m| !m.is_empty()) {
                m.clone_into(&mut model);
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
            reply.push_str(&chunk.content);
            if !chunk.has_choices && !call.include_usage {
                continue;
            }
            let frame = match &chunk.raw {
                Some(raw) => sse_frame(raw),
                None => sse_frame(&synth.chunk(&chunk, first)),
            };
            first = false;
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        // Logged before `[DONE]`: a client that saw the end of the stream
        // has an exchange that is queued or spilled.
        log.submit(&st, &obs, &model, usage, reply).await;
        obs.finish(&model, Ok(usage));
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

fn sse_frame(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// OpenAI's streams report a failure as a final `{"error": ...}` event
/// (the official clients raise on it) and no `[DONE]`.
fn error_frame(e: ModelError) -> Bytes {
    let body = client_error(e).body_json();
    sse_frame(&serde_json::to_vec(&body).unwrap_or_default())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    format!("chatcmpl-{:024x}", rand::random::<u128>() >> 32)
}

/// OpenAI-shaped objects for providers that have no upstream JSON.
struct Synth {
    id: String,
    created: u64,
    model: String,
}

impl Synth {
    fn new(model: &str) -> Self {
        Self {
            id: completion_id(),
            created: unix_now(),
            model: model.to_owned(),
        }
    }

    fn chunk(&self, c: &Chunk, first: bool) -> Vec<u8> {
        let choices = if c.has_choices {
            let mut delta = Map::new();
            if first {
                delta.insert("role".into(), json!("assistant"));
            }
            if !c.content.is_empty() {
                delta.insert("content".into(), json!(c.content));
            }
            json!([{"index": 0, "delta": delta, "finish_reason": c.finish_reason}])
        } else {
            json!([])
        };
        let mut v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": c.model.as_deref().unwrap_or(&self.model), "choices": choices,
        });
        if let Some(u) = c.usage {
            v["usage"] = json!(u);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

fn synthesized_completion(done: &Completion) -> Value {
    json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_now(),
        "model": done.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.content},
            "finish_reason": done.finish_reason.as_deref().unwrap_or("stop"),
        }],
        "usage": done.usage.unwrap_or_default(),
    })
}

pub async fn models(State(st): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = st
        .provider
        .models()
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "clawdbot"}))
        .collect();
    // `backend` is ours; OpenAI clients ignore fields they do not know.
    Json(json!({
        "object": "list",
        "data": data,
        "backend": {"name": st.provider.label(), "reason": st.provider.reason()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn models() -> Vec<String> {
        vec!["m".into()]
    }

    fn param(body: Value) -> (u16, Option<String>) {
        let e = parse_request(body, &models()).unwrap_err();
        (e.status.as_u16(), e.param)
    }

    #[test]
    fn accepts_string_and_array_content_and_keeps_unknown_fields() {
        let call = parse_request(
            json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": []}
            ], "tools": [{"type": "function"}], "response_format": {"type": "json_object"},
               "stream": true, "stream_options": {"include_usage": true}}),
            &models(),
        )
        .unwrap();
        assert!(call.stream && call.include_usage);
        assert!(
            call.req.extra.contains_key("tools") && call.req.extra.contains_key("response_format")
        );
        assert!(!call.req.extra.contains_key("stream") && !call.req.extra.contains_key("model"));
    }

    #[test]
    fn each_rejection_names_its_field() {
        for n in [json!(2), json!(0), json!("1")] {
            assert_eq!(
                param(
                    json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": n})
                ),
                (400, Some("n".into()))
            );
        }
        let one = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1});
        assert_eq!(parse_request(one, &models()).unwrap().req.extra["n"], 1);
        assert_eq!(
            param(json!({"messages": [{"role": "user", "content": "x"}]})),
            (400, Some("model".into()))
        );
        assert_eq!(
            param(json!({"model": "zz", "messages": []})),
            (404, Some("model".into()))
        );
        assert_eq!(
            param(json!({"model": "m", "messages": []})),
            (400, Some("messages".into()))
        );
        assert_eq!(
            param(json!({"model": "m", "messages": [{"role": "bot", "content": "x"}]})),
            (400, Some("messages[0].role".into()))
        );
        assert_eq!(
            param(json!({"model": "m", "messages": [{"role": "user"}]})),
            (400, Some("messages[0].content".into()))
        );
        assert_eq!(
            param(json!({"model": "m", "messages": [{"role": "user", "content": [1]}]})),
            (400, Some("messages[0].content[0].type".into()))
        );
        assert_eq!(
            param(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"})
            ),
            (400, Some("stream".into()))
        );
        assert_eq!(
            param(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9})
            ),
            (400, Some("temperature".into()))
        );
        assert_eq!(
            param(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})
            ),
            (400, Some("max_tokens".into()))
        );
        assert_eq!(
            param(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}})
            ),
            (400, Some("stream_options".into()))
        );
        assert_eq!(param(json!([1, 2])), (400, Some("body".into())));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-z ]{0,8}".prop_map(Value::String),
            prop_oneof![Just("m"), Just("user"), Just("assistant"), Just("text")]
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("model".to_string()),
                        Just("messages".to_string()),
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("stream".to_string()),
                        Just("stream_options".to_string()),
                        Just("type".to_string()),
                        Just("temperature".to_string()),
                        Just("max_tokens".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_bodies_are_accepted_or_refused_with_a_4xx_naming_a_field(body in arb_json()) {
            match parse_request(body, &models()) {
                Ok(call) => prop_assert!(!call.req.messages.is_empty()),
                Err(e) => {
                    prop_assert!(e.status.is_client_error(), "status {}", e.status);
                    prop_assert!(e.param.as_deref().is_some_and(|p| !p.is_empty()));
                }
            }
        }
    }
}
