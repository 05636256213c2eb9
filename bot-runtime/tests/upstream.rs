//! The model provider layer against the mock upstream: retries, fallback,
//! timeouts, the circuit breaker, cancellation and passthrough.

mod common;

use std::time::Duration;

use clawdbot_bench::mock::Behavior;
use common::*;
use serde_json::{Value, json};

fn completion_body() -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn retries_429_and_5xx_then_succeeds() {
    let mock = mock().await;
    mock.push(Behavior::Status(500));
    mock.push(Behavior::Status(429));
    let rt = start(config_for(Some(&mock), |c| c.model.max_retries = 2)).await;
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), completion_body()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn exhausted_retries_become_a_clear_gateway_error() {
    let mock = mock().await;
    mock.set_default(Behavior::Status(503));
    let rt = start(config_for(Some(&mock), |c| c.model.max_retries = 1)).await;
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), completion_body()).await;
    assert_eq!(s, 502, "{b}");
    assert!(
        assert_error_shape(&b)["message"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    assert_eq!(mock.requests(), 2);

    mock.set_default(Behavior::Status(429));
    let (s, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(assert_error_shape(&b)["code"], "model_unavailable");
}

#[tokio::test]
async fn a_dead_endpoint_is_a_503_not_a_hang() {
    let rt = start(config_for(None, |c| {
        c.model.endpoint = Some("http://127.0.0.1:9/v1".into());
        c.model.max_retries = 1;
        c.model.retry_backoff_ms = 5;
    }))
    .await;
    let (s, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        assert_error_shape(&b)["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );
    // A stream that cannot start gets a real status, not a 200 with an error event.
    let (s, b) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "hi", "stream": true}),
    )
    .await;
    assert_eq!(s, 503, "{b}");
    let body =
        json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), body).await;
    assert_eq!(s, 503, "{b}");
}

#[tokio::test]
async fn upstream_client_errors_are_not_retried_and_keep_their_status_on_v1() {
    let mock = mock().await;
    mock.push(Behavior::Status(400));
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), completion_body()).await;
    assert_eq!(s, 400, "{b}");
    assert_error_shape(&b);
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn falls_back_to_the_next_endpoint() {
    let primary = mock().await;
    primary.set_default(Behavior::Status(500));
    let backup = mock_with("from the backup", Duration::ZERO).await;
    let rt = start(config_for(Some(&primary), |c| {
        c.model.max_retries = 1;
        c.model.fallbacks = vec![clawdbot_config::ModelFallback {
            endpoint: backup.base_url(),
            api_key: Some(clawdbot_config::Secret::new("backup-key")),
            api_key_env: None,
            name: Some("backup-model".into()),
        }];
    }))
    .await;
    let (s, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["reply"], "from the backup");
    assert_eq!(primary.requests(), 2);
    assert_eq!(backup.last_request().unwrap()["model"], "backup-model");
    assert_eq!(
        backup.last_authorization().as_deref(),
        Some("Bearer backup-key")
    );
}

#[tokio::test]
async fn a_hanging_upstream_times_out_with_504() {
    let mock = mock().await;
    mock.set_default(Behavior::Hang);
    let rt = start(config_for(Some(&mock), |c| c.model.timeout_secs = 1)).await;
    let started = std::time::Instant::now();
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), completion_body()).await;
    assert_eq!(s, 504, "{b}");
    assert_eq!(assert_error_shape(&b)["code"], "model_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_circuit_opens_fails_fast_and_closes_again() {
    let mock = mock().await;
    mock.set_default(Behavior::Status(500));
    let rt = start(config_for(Some(&mock), |c| {
        c.model.max_retries = 0;
        c.model.circuit_breaker.failure_threshold = 2;
        c.model.circuit_breaker.open_secs = 1;
    }))
    .await;
    let url = rt.url("/v1/chat/completions");
    for _ in 0..2 {
        assert_eq!(post_json(&url, completion_body()).await.0, 502);
    }
    assert_eq!(mock.requests(), 2);
    // Open: answered at once, nothing reaches the upstream.
    for _ in 0..3 {
        let (s, b) = post_json(&url, completion_body()).await;
        assert_eq!(s, 503, "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("circuit open")
        );
    }
    assert_eq!(
        mock.requests(),
        2,
        "no upstream call while the circuit is open"
    );
    // The breaker shows on /metrics, by endpoint (host and port, no key).
    assert_eq!(circuit_gauge(&rt).await, ("openai".into(), 1));
    // After the open period one trial goes out; it succeeds and closes the circuit.
    mock.set_default(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post_json(&url, completion_body()).await.0, 200);
    assert_eq!(post_json(&url, completion_body()).await.0, 200);
    assert_eq!(mock.requests(), 4);
    assert_eq!(circuit_gauge(&rt).await, ("openai".into(), 0));
}

/// The one `clawdbot_model_circuit_open` series: its provider and value,
/// after checking that its endpoint label is the mock's host and port.
async fn circuit_gauge(rt: &Runtime) -> (String, i64) {
    let text = rt.metrics_text().await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("clawdbot_model_circuit_open{"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let (labels, value) = lines[0].rsplit_once(' ').unwrap();
    assert!(labels.contains(r#"endpoint="127.0.0.1:"#), "{labels}");
    let provider = labels
        .split("provider=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    (provider.to_owned(), value.parse().unwrap())
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let mock = mock_with(
        "a b c d e f g h i j k l m n o p",
        Duration::from_millis(150),
    )
    .await;
    let rt = start(config_for(Some(&mock), |_| {})).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/api/v1/chat", json!({"message": "hi", "stream": true})),
    ] {
        let before = mock.streams_cancelled();
        let mut r = client()
            .post(rt.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let first = r.chunk().await.unwrap();
        assert!(first.is_some());
        drop(r);
        assert!(
            mock.wait_for(|m| m.streams_cancelled() > before, Duration::from_secs(5))
                .await,
            "{path}: the upstream stream was not cancelled"
        );
        assert_eq!(mock.streams_completed(), 0);
    }
    assert!(
        rt.state.drain.wait_idle(Duration::from_secs(2)).await == 0,
        "stream tasks ended"
    );
}

#[tokio::test]
async fn unknown_fields_reach_the_upstream_untouched_with_the_configured_key() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| {
        c.model.api_key = Some(clawdbot_config::Secret::new("upstream-secret"));
        c.model.temperature = Some(0.3);
        c.model.max_tokens = Some(256);
    }))
    .await;
    let body = json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "seed": 7,
        "max_tokens": 100000,
    });
    let (s, b) = post_json(&rt.url("/v1/chat/completions"), body.clone()).await;
    assert_eq!(s, 200, "{b}");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["tools"], body["tools"]);
    assert_eq!(sent["response_format"], body["response_format"]);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["messages"], body["messages"]);
    assert_eq!(sent["temperature"], 0.3, "config default applied");
    assert_eq!(
        sent["max_tokens"], 256,
        "the configured max_tokens is a cap"
    );
    let (status, refused) = post_json(
        &rt.url("/v1/chat/completions"),
        json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "n": 3}),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["param"].as_str()),
        (400, Some("n")),
        "{refused}"
    );
    assert_eq!(
        mock.last_authorization().as_deref(),
        Some("Bearer upstream-secret")
    );
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        b["usage"]["total_tokens"],
        b["usage"]["prompt_tokens"].as_u64().unwrap() + 5
    );
}

#[tokio::test]
async fn streams_end_with_done_and_usage_only_when_asked() {
    let mock = mock_with("one two", Duration::ZERO).await;
    let rt = start(config_for(Some(&mock), |_| {})).await;
    for include in [false, true] {
        let mut body = json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        if include {
            body["stream_options"] = json!({"include_usage": true});
        }
        let r = client()
            .post(rt.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let events = sse_events(&r.text().await.unwrap());
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        let usage_chunks = chunks
            .iter()
            .filter(|c| c["choices"].as_array().unwrap().is_empty())
            .count();
        assert_eq!(usage_chunks, usize::from(include));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "one two");
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
    }
    // The upstream was always asked for usage, for our own accounting.
    assert_eq!(
        mock.last_request().unwrap()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn a_mid_stream_failure_on_v1_is_an_error_event_without_done() {
    let mock = mock_with("one two three", Duration::from_millis(5)).await;
    mock.push(Behavior::FailMidStream);
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let body = json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(rt.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_events(&r.text().await.unwrap());
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_error_shape(&last);
    assert!(events.iter().all(|(_, d)| d != "[DONE]"));
}

#[tokio::test]
async fn models_lists_the_configured_model() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let b: Value = client()
        .get(rt.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["object"], "list");
    assert_eq!(b["data"][0]["id"], "mock-model");
    let (s, b) = post_json(
        &rt.url("/v1/chat/completions"),
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(assert_error_shape(&b)["code"], "model_not_found");
    assert_eq!(mock.requests(), 0);
}
