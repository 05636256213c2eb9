//! OpenAI chat-completions wire shapes, rendered straight to bytes.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub(super) struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    pub content: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl ChatRequest {
    /// Whitespace-separated words over all message contents, string or
    /// `[{"type":"text","text":..}]` parts.
    pub fn prompt_words(&self) -> usize {
        self.messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(|c| match c {
                Value::String(s) => s.split_whitespace().count(),
                Value::Array(parts) => parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(|t| t.split_whitespace().count())
                    .sum(),
                _ => 0,
            })
            .sum()
    }
}

pub(super) struct Meta<'a> {
    pub id: String,
    pub created: u64,
    pub model: &'a str,
}

pub(super) fn completion(
    meta: &Meta<'_>,
    reply: &str,
    prompt: usize,
    completion: usize,
) -> Vec<u8> {
    let v = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
        }],
        "usage": usage(prompt, completion),
    });
    serde_json::to_vec(&v).expect("JSON value serializes")
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Split so that concatenating the pieces gives back `reply` exactly: each
/// piece is a word with the whitespace before it (as tokenizers emit
/// " word"); trailing whitespace sticks to the last piece.
pub(super) fn split_words(reply: &str) -> Vec<&str> {
    // Byte offsets where each word ends; a piece runs from the previous
    // word's end to this word's end.
    let mut ends = Vec::new();
    let mut in_word = false;
    for (i, c) in reply.char_indices() {
        let ws = c.is_whitespace();
        if ws && in_word {
            ends.push(i);
        }
        in_word = !ws;
    }
    if in_word {
        ends.push(reply.len());
    }
    if let Some(last) = ends.last_mut() {
        *last = reply.len();
    }
    let starts = std::iter::once(0).chain(ends.iter().copied());
    starts
        .zip(ends.iter())
        .map(|(s, &e)| &reply[s..e])
        .collect()
}

/// All SSE events of one streamed answer; the bool marks content chunks
/// (those the chunk delay applies to). With `fail` only the role chunk and
/// the first content chunk are produced.
pub(super) fn stream_frames(
    meta: &Meta<'_>,
    reply: &str,
    include_usage: bool,
    (prompt, completion): (usize, usize),
    fail: bool,
) -> Vec<(bool, Bytes)> {
    // Render the invariant head once; per chunk only the choice differs.
    let head = format!(
        "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[",
        json_str(&meta.id),
        meta.created,
        json_str(meta.model),
    );
    // OpenAI sends `"usage":null` on every chunk once usage was asked for.
    let tail = if include_usage {
        "],\"usage\":null}\n\n"
    } else {
        "]}\n\n"
    };
    let chunk = |choice: &str| Bytes::from(format!("{head}{choice}{tail}"));

    let pieces = split_words(reply);
    let mut frames = Vec::with_capacity(pieces.len() + 4);
    frames.push((
        false,
        chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#),
    ));
    for piece in pieces {
        let choice = format!(
            r#"{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}"#,
            json_str(piece)
        );
        frames.push((true, chunk(&choice)));
        if fail {
            return frames;
        }
    }
    if fail {
        return frames;
    }
    frames.push((
        false,
        chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#),
    ));
    if include_usage {
        let usage = serde_json::to_string(&usage(prompt, completion)).expect("serializes");
        frames.push((
            false,
            Bytes::from(format!("{head}],\"usage\":{usage}}}\n\n")),
        ));
    }
    frames.push((false, Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

pub(super) fn models(model: &str) -> Vec<u8> {
    let v = json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "mock"}],
    });
    serde_json::to_vec(&v).expect("JSON value serializes")
}

/// OpenAI-shaped error body; type and code follow what OpenAI sends for
/// that status.
pub(super) fn error(status: u16, message: Option<&str>) -> Vec<u8> {
    let (kind, code, default_msg) = match status {
        400 => ("invalid_request_error", Value::Null, "Invalid request."),
        401 => (
            "invalid_request_error",
            json!("invalid_api_key"),
            "Incorrect API key provided.",
        ),
        403 => (
            "invalid_request_error",
            json!("unsupported_country_region_territory"),
            "Forbidden.",
        ),
        404 => (
            "invalid_request_error",
            json!("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        429 => (
            "requests",
            json!("rate_limit_exceeded"),
            "Rate limit reached for requests.",
        ),
        503 => (
            "server_error",
            json!("engine_overloaded"),
            "The engine is currently overloaded, please try again later.",
        ),
        s if s >= 500 => (
            "server_error",
            Value::Null,
            "The server had an error while processing your request.",
        ),
        _ => ("invalid_request_error", Value::Null, "Request failed."),
    };
    let v = json!({
        "error": {
            "message": message.unwrap_or(default_msg),
            "type": kind,
            "param": null,
            "code": code,
        }
    });
    serde_json::to_vec(&v).expect("JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn split_keeps_every_byte() {
        for s in [
            "Hello from the mock upstream.",
            "  lead and trail  ",
            "one",
            "",
            "   ",
            "tab\tand\nnewline  double",
            "ünï cödé 字 字",
        ] {
            let pieces = split_words(s);
            let expect = if pieces.is_empty() { "" } else { s };
            assert_eq!(pieces.concat(), expect);
            assert_eq!(pieces.len(), s.split_whitespace().count(), "{s:?}");
            // OpenAI-style tokens: every piece after the first starts with
            // whitespace.
            assert!(
                pieces
                    .iter()
                    .skip(1)
                    .all(|p| p.starts_with(char::is_whitespace))
            );
        }
    }
}
