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
        r#"clawdbot_http_request_duration_seconds_bucket{method="POST",route="/api/v1/chat",status="200",le="0.5"}"#,
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
