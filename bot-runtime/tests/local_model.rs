//! The local model (llama.cpp) end to end, on the real default model file
//! that `make test` fetches into models/: answers, streaming on every
//! route, sampling limits, disconnects, capacity, long prompts, and what a
//! missing, truncated or corrupt file does to each backend choice.

mod common;

use std::time::Duration;

use bot_runtime::chat::model::{ChatRequest, from_config};
use clawdbot_config::{ModelBackend, ModelConfig, RuntimeConfig};
use common::{client, config_for, post_json, post_text, sse_events, start};
use futures_util::StreamExt;
use serde_json::{Value, json};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const NAME: &str = "SmolLM2-135M-Instruct.Q4_1";

fn local(change: impl FnOnce(&mut RuntimeConfig)) -> RuntimeConfig {
    assert!(
        std::path::Path::new(MODEL).is_file(),
        "{MODEL} is missing: run scripts/fetch-models.sh (make test does)"
    );
    config_for(None, |c| {
        c.model.backend = Some(ModelBackend::Local);
        c.model.local.path = MODEL.into();
        // Tests run side by side, each with a model of its own: one
        // thread each keeps them from fighting over the cores.
        c.model.local.threads = Some(1);
        change(c);
    })
}

fn ask(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": NAME,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// The content deltas and the finish reason of a `/v1` event stream.
fn openai_stream(text: &str) -> (Vec<String>, Option<String>, Value) {
    let mut deltas = Vec::new();
    let (mut finish, mut usage) = (None, Value::Null);
    for (_, data) in sse_events(text) {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            deltas.push(c.to_owned());
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    (deltas, finish, usage)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_capital_of_france_on_both_apis() {
    let rt = start(local(|_| {})).await;
    let (status, body) = post_json(
        &rt.url("/v1/chat/completions"),
        ask("What is the capital of France?", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(body["model"], NAME);
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let (status, body) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "What is the capital of France?"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["reply"].as_str().unwrap().contains("Paris"), "{body}");

    let (_, health) = common::get_json(&rt.url("/health")).await;
    assert_eq!(health["model"]["backend"], "local");
    assert!(
        health["model"]["reason"]
            .as_str()
            .unwrap()
            .contains("model.backend is local")
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_token_by_token_on_both_apis() {
    let rt = start(local(|_| {})).await;
    let text = post_text(
        &rt.url("/v1/chat/completions"),
        ask(
            "Name three colours.",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    let (deltas, finish, usage) = openai_stream(&text);
    assert!(deltas.len() >= 3, "one chunk per token, got {deltas:?}");
    assert_eq!(finish.as_deref(), Some("stop"), "{text}");
    // A token whose text is part of a character or of a possible stop
    // sequence waits for the next one, so deltas can be fewer than tokens.
    assert!(
        usage["completion_tokens"].as_u64().unwrap() as usize >= deltas.len(),
        "{text}"
    );

    let text = post_text(
        &rt.url("/api/v1/chat"),
        json!({"message": "Name three colours.", "stream": true}),
    )
    .await;
    let events = sse_events(&text);
    let deltas = events.iter().filter(|(e, _)| e == "delta").count();
    assert!(deltas >= 3, "{text}");
    assert_eq!(events.last().unwrap().0, "done", "{text}");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_and_stop_sequences_are_honoured() {
    let rt = start(local(|_| {})).await;
    let url = rt.url("/v1/chat/completions");
    let question = "Explain what a cat is in two sentences.";
    let (_, body) = post_json(&url, ask(question, json!({"max_tokens": 3}))).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");

    // Greedy decoding is deterministic: cut the full answer at a word in
    // its middle and that word must end the second answer.
    let (_, body) = post_json(&url, ask(question, json!({"max_tokens": 60}))).await;
    let full = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 6, "{full}");
    let stop = format!(" {}", words[words.len() / 2]);
    let cut = &full[..full.find(&stop).unwrap()];
    let (_, body) = post_json(
        &url,
        ask(question, json!({"max_tokens": 60, "stop": [stop.clone()]})),
    )
    .await;
    assert_eq!(
        body["choices"][0]["message"]["content"], cut,
        "stop {stop:?}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // A bad sampling field is the caller's mistake, named.
    let (status, body) = post_json(&url, ask(question, json!({"stop": 5}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("stop"),
        "{body}"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_stops_generation() {
    let rt = start(local(|_| {})).await;
    let resp = client()
        .post(rt.url("/v1/chat/completions"))
        .json(&ask(
            "Write a very long story about a dragon.",
            json!({"stream": true, "max_tokens": 1500, "temperature": 0.8}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    drop(body);
    // The generation thread notices at its next step.
    let counter = "clawdbot_local_model_completion_tokens_total";
    let mut settled = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = rt.metrics_text().await;
        if metric(&m, "clawdbot_local_model_active_sequences") == 0.0 {
            settled = Some(metric(&m, counter));
            break;
        }
    }
    let settled = settled.expect("the sequence was released");
    assert!(
        settled < 1500.0,
        "stopped long before max_tokens: {settled}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(&rt.metrics_text().await, counter),
        settled,
        "no token after the disconnect"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_chats_generate_together_and_a_fifth_beyond_capacity_gets_503() {
    let rt = start(local(|c| {
        c.model.local.parallel = 4;
        c.model.local.queue = 0;
    }))
    .await;
    let url = rt.url("/v1/chat/completions");
    let mut streams = Vec::new();
    for i in 0..4 {
        let resp = client()
            .post(&url)
            .json(&ask(
                &format!("Count from {i} to 60, one number per line."),
                json!({"stream": true, "max_tokens": 120}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        streams.push((first, body));
    }
    let resp = client()
        .post(&url)
        .json(&ask("Hello?", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_busy", "{body}");

    let m = rt.metrics_text().await;
    assert_eq!(metric(&m, "clawdbot_local_model_active_sequences"), 4.0);
    for (first, mut body) in streams {
        let mut text = String::from_utf8_lossy(&first).into_owned();
        while let Some(part) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&part.unwrap()));
        }
        let (deltas, finish, _) = openai_stream(&text);
        assert!(finish.is_some() && !deltas.is_empty(), "{text}");
    }
    // Capacity is free again.
    let (status, _) = post_json(&url, ask("Hello?", json!({"max_tokens": 4}))).await;
    assert_eq!(status, 200);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_conversation_is_cut_to_the_context() {
    // Also the 16-bit cache: the same answers, more memory.
    let rt = start(local(|c| {
        c.model.local.context_size = 256;
        c.model.local.kv_cache = clawdbot_config::KvCache::F16;
    }))
    .await;
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(300);
    let body = json!({
        "model": NAME,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": long},
            {"role": "assistant", "content": long},
            {"role": "user", "content": format!("{long} What is the capital of France?")},
        ],
    });
    let (status, body) = post_json(&rt.url("/v1/chat/completions"), body).await;
    assert_eq!(status, 200, "{body}");
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt > 100 && prompt <= 256 - 16,
        "prompt cut to the window less the answer: {prompt}"
    );
    // The latest turn keeps its end: the question survives the cut.
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    rt.stop().await;
}

fn model_cfg(backend: Option<ModelBackend>, path: &str, endpoint: Option<&str>) -> ModelConfig {
    let mut m = ModelConfig {
        backend,
        endpoint: endpoint.map(str::to_owned),
        ..ModelConfig::default()
    };
    m.local.path = path.into();
    m.local.threads = Some(1);
    m
}

/// A copy of the model with its tensor data cut short, and a file with a
/// GGUF header followed by garbage.
fn broken_files() -> (String, String) {
    let dir = common::temp_dir("gguf");
    let data = std::fs::read(MODEL).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &data[..data.len() / 3]).unwrap();
    let corrupt = dir.join("corrupt.gguf");
    let mut junk = b"GGUF\x03\x00\x00\x00".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&corrupt, junk).unwrap();
    (
        truncated.display().to_string(),
        corrupt.display().to_string(),
    )
}

#[test]
fn each_backend_choice_with_each_file_state() {
    let (truncated, corrupt) = broken_files();
    let endpoint = Some("http://127.0.0.1:9/v1");
    let label = |m: &ModelConfig| from_config(m).map(|p| (p.label(), p.reason().to_owned()));

    // auto: the endpoint wins, then a loadable file, then none with the reason.
    assert_eq!(
        label(&model_cfg(None, MODEL, endpoint)).unwrap().0,
        "openai"
    );
    assert_eq!(
        label(&model_cfg(Some(ModelBackend::Auto), MODEL, None))
            .unwrap()
            .0,
        "local"
    );
    for (path, why) in [
        ("/nonexistent/model.gguf", "not found"),
        (truncated.as_str(), "could not load"),
        (corrupt.as_str(), "could not load"),
    ] {
        let (backend, reason) = label(&model_cfg(None, path, None)).unwrap();
        assert_eq!(backend, "none", "{path}");
        assert!(reason.contains(path) && reason.contains(why), "{reason}");
    }
    // local: the same files refuse to start, naming the file.
    for path in [
        "/nonexistent/model.gguf",
        truncated.as_str(),
        corrupt.as_str(),
    ] {
        let err = label(&model_cfg(Some(ModelBackend::Local), path, None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(path) && err.contains("model.backend is local"),
            "{err}"
        );
    }
    // A wrong checksum is refused before llama.cpp sees the file.
    let mut m = model_cfg(Some(ModelBackend::Local), MODEL, None);
    m.local.sha256 = Some("0".repeat(64));
    let err = label(&m).unwrap_err().to_string();
    assert!(err.contains("SHA-256"), "{err}");
    // Explicit choices are taken as they are.
    assert_eq!(
        label(&model_cfg(Some(ModelBackend::None), MODEL, endpoint))
            .unwrap()
            .0,
        "none"
    );
    assert_eq!(
        label(&model_cfg(Some(ModelBackend::Openai), MODEL, endpoint))
            .unwrap()
            .0,
        "openai"
    );
    assert_eq!(
        label(&model_cfg(Some(ModelBackend::Local), MODEL, endpoint))
            .unwrap()
            .0,
        "local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_streams_without_http() {
    let provider = from_config(&model_cfg(Some(ModelBackend::Local), MODEL, None)).unwrap();
    let req = ChatRequest {
        model: NAME.into(),
        messages: vec![json!({"role": "user", "content": "中国的首都是哪里？"})],
        extra: json!({"max_tokens": 8, "temperature": 0})
            .as_object()
            .unwrap()
            .clone(),
    };
    let done = provider.complete(&req).await.unwrap();
    assert_eq!(done.usage.unwrap().completion_tokens, 8);
    assert!(
        !done.content.contains('\u{fffd}'),
        "whole characters only: {:?}",
        done.content
    );
}
