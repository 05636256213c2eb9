//! `/metrics` exposes the documented series with their labels.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn metrics_cover_http_model_tokens_and_streams() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let (s, _) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hello world"})).await;
    assert_eq!(s, 200);
    let r = client()
        .post(rt.url("/v1/chat/completions"))
        .json(&json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "a b"}]}))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap();
    let text = rt.metrics_text().await;
    for needle in [
        r#"clawdbot_http_request_duration_seconds_bucket{method="POST",route="/api/v1/chat",status="200",stream="false",le="0.5"}"#,
        r#"clawdbot_http_request_duration_seconds_count{method="POST",route="/v1/chat/completions",status="200",stream="true"} 1"#,
        r#"clawdbot_model_request_duration_seconds_count{outcome="ok",provider="openai"} 2"#,
        r#"clawdbot_model_time_to_first_token_seconds_count{outcome="ok",provider="openai"} 1"#,
        r#"clawdbot_model_tokens_total{kind="completion",provider="openai"} 10"#,
        r#"clawdbot_model_tokens_total{kind="prompt",provider="openai"}"#,
        "clawdbot_active_streams 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let _ = client().get(rt.url("/nope")).send().await.unwrap();
    let text = rt.metrics_text().await;
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "unknown routes share one label"
    );
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_port() {
    let mock = mock().await;
    let port = free_port();
    let rt = start(config_for(Some(&mock), |c| {
        c.server.metrics_listen = Some(format!("127.0.0.1:{port}"));
    }))
    .await;
    let (s, _) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hello"})).await;
    assert_eq!(s, 200);
    // The main port (the one an ingress exposes) no longer answers /metrics.
    let main = client().get(rt.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404);
    let body: serde_json::Value = main.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_route", "{body}");
    // The metrics port serves them, counting the chat on the main port.
    let metrics = format!("http://127.0.0.1:{port}");
    let text = client()
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"clawdbot_http_request_duration_seconds_count{method="POST",route="/api/v1/chat",status="200",stream="false"} 1"#),
        "{text}"
    );
    // And nothing else: no chat, no health on the metrics port.
    for path in ["/api/v1/chat", "/health/ready", "/"] {
        let r = client()
            .get(format!("{metrics}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}
