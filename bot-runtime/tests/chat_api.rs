//! The session chat API over real HTTP.

mod common;

use std::time::Duration;

use clawdbot_bench::mock::Behavior;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_conversation_keeps_its_history() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| {
        c.model.system_prompt = Some("Be brief.".into())
    }))
    .await;
    let (s, first) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "hello", "user_id": "u1"}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(sid.len(), 32);
    assert_eq!(first["reply"], "Hello from the mock upstream.");
    assert_eq!(first["model"], "mock-model");
    assert_eq!(first["usage"]["completion_tokens"], 5);

    let (s, second) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "again", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["session_id"], sid);
    let sent = mock.last_request().unwrap();
    let roles: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "hello");
    assert_eq!(sent["messages"][3]["content"], "again");

    let r = client()
        .get(rt.url(&format!("/api/v1/sessions/{sid}/messages")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "hello");
    assert_eq!(msgs[1]["role"], "assistant");
    assert!(msgs[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_ne!(
        first["session_id"],
        post_json(&rt.url("/api/v1/chat"), json!({"message": "x"}))
            .await
            .1["session_id"]
    );
}

#[tokio::test]
async fn streaming_sends_deltas_then_done() {
    let mock = mock_with("one two three four", Duration::from_millis(5)).await;
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let r = client()
        .post(rt.url("/api/v1/chat"))
        .json(&json!({"message": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Proxies that buffer by default (nginx) are asked not to.
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    let events = sse_events(&r.text().await.unwrap());
    let deltas: Vec<_> = events.iter().filter(|(e, _)| e == "delta").collect();
    assert_eq!(deltas.len(), 4);
    let text: String = deltas
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "one two three four");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "done");
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(done["reply"], "one two three four");
    assert_eq!(done["usage"]["completion_tokens"], 4);
    let sid = done["session_id"].as_str().unwrap();
    let msgs: Value = client()
        .get(rt.url(&format!("/api/v1/sessions/{sid}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(msgs["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_model_failure_mid_stream_is_an_error_event() {
    let mock = mock_with("one two three", Duration::from_millis(5)).await;
    mock.push(Behavior::FailMidStream);
    let rt = start(config_for(Some(&mock), |_| {})).await;
    let r = client()
        .post(rt.url("/api/v1/chat"))
        .json(&json!({"message": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&r.text().await.unwrap());
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error", "{events:?}");
    let body: Value = serde_json::from_str(data).unwrap();
    assert_error_shape(&body);
    assert!(events.iter().all(|(e, _)| e != "done"));
}

#[tokio::test]
async fn a_second_turn_waits_for_the_first_then_gets_409() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| c.sessions.turn_wait_secs = 1)).await;
    let (_, first) = post_json(&rt.url("/api/v1/chat"), json!({"message": "a"})).await;
    let sid = first["session_id"].as_str().unwrap().to_owned();

    // Waits behind a turn shorter than the bound, and succeeds.
    mock.push(Behavior::Slow(Duration::from_millis(400)));
    let url = rt.url("/api/v1/chat");
    let slow = tokio::spawn({
        let (url, sid) = (url.clone(), sid.clone());
        async move { post_json(&url, json!({"message": "slow", "session_id": sid})).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, _) = post_json(&url, json!({"message": "behind", "session_id": sid})).await;
    assert_eq!(s, 200);
    assert_eq!(slow.await.unwrap().0, 200);

    // Gives up with 409 behind a turn longer than the bound.
    mock.push(Behavior::Slow(Duration::from_millis(2500)));
    let slow = tokio::spawn({
        let (url, sid) = (url.clone(), sid.clone());
        async move { post_json(&url, json!({"message": "slower", "session_id": sid})).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, body) = post_json(&url, json!({"message": "behind", "session_id": sid})).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(assert_error_shape(&body)["code"], "session_busy");
    assert_eq!(slow.await.unwrap().0, 200);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| {
        c.server.body_limit_bytes = 4096;
        c.sessions.max_message_bytes = 1000;
    }))
    .await;
    let url = rt.url("/api/v1/chat");
    let c = client();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "message"),
        // Over sessions.max_message_bytes (counted in UTF-8 bytes).
        (json!({"message": "x".repeat(1001)}), 400, "message"),
        (json!({"message": "é".repeat(501)}), 400, "message"),
        (json!({"message": ""}), 400, "message"),
        (json!({"message": "   "}), 400, "message"),
        (json!({"message": 5}), 400, "message"),
        (json!({"message": "x", "stream": "yes"}), 400, "stream"),
        (json!({"message": "x", "sesion_id": "a"}), 400, "sesion_id"),
        (
            json!({"message": "x", "session_id": "nope"}),
            400,
            "session_id",
        ),
        (
            json!({"message": "x", "session_id": "0123456789abcdef0123456789abcdef"}),
            404,
            "session_id",
        ),
        (json!({"message": "x", "user_id": ""}), 400, "user_id"),
        (json!([1]), 400, "body"),
    ];
    for (body, status, param) in cases {
        let (s, b) = post_json(&url, body.clone()).await;
        assert_eq!(s, status, "{body} -> {b}");
        assert_eq!(assert_error_shape(&b)["param"], param, "{body} -> {b}");
    }
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .body("{\"message\": \"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = json!({"message": "x".repeat(10_000)});
    let r = c.post(&url).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_error_shape(&r.json().await.unwrap());
    let r = c
        .get(rt.url("/api/v1/sessions/0123456789abcdef0123456789abcdef/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(rt.url("/api/v1/chat")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_error_shape(&r.json().await.unwrap());
    let r = c.get(rt.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_error_shape(&r.json().await.unwrap());
    assert_eq!(mock.requests(), 0, "nothing reached the model");
}

#[tokio::test]
async fn responses_carry_request_ids() {
    let rt = start(config_for(None, |_| {})).await;
    let r = client().get(rt.url("/health")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    let r = client()
        .get(rt.url("/health"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
}

#[tokio::test]
async fn without_a_model_the_runtime_says_so() {
    let rt = start(config_for(None, |_| {})).await;
    let (s, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 200);
    assert!(
        b["reply"]
            .as_str()
            .unwrap()
            .contains("No model is configured"),
        "{b}"
    );
    let (s, b) = post_json(
        &rt.url("/v1/chat/completions"),
        json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        b["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("MODEL_ENDPOINT")
    );
}

#[tokio::test]
async fn the_web_page_is_served_with_no_external_assets() {
    let rt = start(config_for(None, |_| {})).await;
    let r = client().get(rt.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.headers().contains_key("content-security-policy"));
    let html = r.text().await.unwrap();
    assert!(html.contains("api/v1/chat"));
    for external in ["src=\"http", "href=\"http", "src='http", "@import"] {
        assert!(
            !html.contains(external),
            "page loads an external asset: {external}"
        );
    }
}

#[tokio::test]
async fn idle_sessions_expire() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| c.sessions.ttl_secs = 1)).await;
    let (_, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    let sid = b["session_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, b) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "hi", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"]["code"], "session_not_found");
}

#[tokio::test]
async fn readiness_names_a_configured_dependency_that_is_down() {
    // Port 1 on loopback: nothing listens there.
    let rt = start(config_for(None, |c| {
        c.redis.url = Some(clawdbot_config::Secret::new("redis://127.0.0.1:1/0"));
    }))
    .await;
    let r = client().get(rt.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["failing"], json!(["redis"]), "{b}");
    assert_eq!(
        client()
            .get(rt.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The machine's real Redis answers.
    let rt = start(config_for(None, |c| {
        c.redis.url = Some(clawdbot_config::Secret::new("redis://127.0.0.1:6379/0"));
    }))
    .await;
    let r = client().get(rt.url("/health/ready")).send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["checks"]["redis"], "ok", "{b}");
}
