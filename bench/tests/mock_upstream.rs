//! Wire-format and scripting tests for the mock upstream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clawdbot_bench::mock::{Behavior, MockOptions, MockUpstream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    tx.send_request(req).await
}

fn chat_request(body: &Value, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post("/v1/chat/completions")
        .header("host", "mock")
        .header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn post(addr: SocketAddr, body: &Value) -> (StatusCode, String, Bytes) {
    let resp = send(addr, chat_request(body, None))
        .await
        .expect("response");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, body)
}

fn hi(stream: bool) -> Value {
    json!({"model": "gpt-test", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Parse an SSE body into its `data:` payloads.
fn events(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("utf-8");
    assert!(text.ends_with("\n\n"), "events end with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data: prefix").to_owned())
        .collect()
}

#[tokio::test]
async fn non_streaming_completion_shape() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/v1"));
    let body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be  brief please"},
            {"role": "user", "content": [
                {"type": "text", "text": "two words"},
                {"type": "image_url", "image_url": {"url": "http://x/y z"}}
            ]}
        ]
    });
    let resp = send(mock.addr(), chat_request(&body, Some("Bearer sk-test")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream."}, "finish_reason": "stop"}])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    assert_eq!(mock.requests(), 1);
    assert_eq!(mock.last_request(), Some(body));
    assert_eq!(mock.last_authorization().as_deref(), Some("Bearer sk-test"));
}

#[tokio::test]
async fn model_falls_back_to_options() {
    let opts = MockOptions {
        model: "m-1".into(),
        reply: "ok".into(),
        ..MockOptions::default()
    };
    let mock = MockUpstream::start(opts).await.unwrap();
    let (_, _, body) = post(mock.addr(), &json!({"messages": []})).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["model"], "m-1");
    assert_eq!(v["usage"]["prompt_tokens"], 0);
    assert_eq!(v["usage"]["completion_tokens"], 1);
    assert_eq!(mock.last_authorization(), None);
}

#[tokio::test]
async fn streaming_shape_without_usage() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let (status, ct, body) = post(mock.addr(), &hi(true)).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/event-stream");
    let ev = events(&body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // role chunk + 5 words + stop chunk
    assert_eq!(chunks.len(), 7);
    let id = chunks[0]["id"].clone();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "gpt-test");
        assert_eq!(c["created"], chunks[0]["created"]);
        assert!(c.get("usage").is_none());
        assert_eq!(c["choices"][0]["index"], 0);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..6]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            c["choices"][0]["delta"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello from the mock upstream.");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert!(
        mock.wait_for(|m| m.streams_completed() == 1, WAIT).await,
        "completed counter"
    );
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn streaming_with_include_usage() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.push(Behavior::Reply("  spaced   out\ttext ".into()));
    let mut req = hi(true);
    req["stream_options"] = json!({"include_usage": true});
    req["messages"] = json!([{"role": "user", "content": "one two three"}]);
    let (_, _, body) = post(mock.addr(), &req).await;
    let ev = events(&body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
    let before = &chunks[..chunks.len() - 1];
    assert!(before.iter().all(|c| c["usage"].is_null()));
    assert_eq!(
        before.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let text: String = before
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "  spaced   out\ttext ");
}

#[tokio::test]
async fn scripted_statuses_then_default() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    for code in [429u16, 500, 401, 503, 400] {
        mock.push(Behavior::Status(code));
    }
    for (code, kind) in [
        (429, "requests"),
        (500, "server_error"),
        (401, "invalid_request_error"),
        (503, "server_error"),
        (400, "invalid_request_error"),
    ] {
        let (status, ct, body) = post(mock.addr(), &hi(true)).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&body).unwrap();
        let err = v["error"].as_object().unwrap();
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(err["type"], kind);
        assert!(err.contains_key("param") && err["param"].is_null());
        assert!(err.contains_key("code"));
    }
    let (status, _, _) = post(mock.addr(), &hi(false)).await;
    assert_eq!(status, 200, "script empty: back to Ok");
    mock.set_default(Behavior::Status(502));
    let (status, _, _) = post(mock.addr(), &hi(false)).await;
    assert_eq!(status, 502);
    mock.set_default(Behavior::Ok);
    assert_eq!(mock.requests(), 7);
}

#[tokio::test]
async fn slow_reply_and_hang() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.push(Behavior::Slow(Duration::from_millis(150)));
    mock.push(Behavior::Reply("custom".into()));
    let t = Instant::now();
    let (status, _, _) = post(mock.addr(), &hi(false)).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let (_, _, body) = post(mock.addr(), &hi(false)).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "custom");

    mock.push(Behavior::Hang);
    let hung =
        tokio::time::timeout(Duration::from_millis(300), post(mock.addr(), &hi(false))).await;
    assert!(hung.is_err(), "Hang must not answer");
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn shutdown_closes_hanging_connections() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.set_default(Behavior::Hang);
    let addr = mock.addr();
    let pending = tokio::spawn(send(addr, chat_request(&hi(false), None)));
    assert!(mock.wait_for(|m| m.requests() == 1, WAIT).await);
    mock.shutdown();
    let res = tokio::time::timeout(WAIT, pending)
        .await
        .expect("closed promptly");
    assert!(res.unwrap().is_err(), "connection closed without response");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn fail_mid_stream_sends_one_chunk_and_drops() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.push(Behavior::FailMidStream);
    let resp = send(mock.addr(), chat_request(&hi(true), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => got.extend_from_slice(f.data_ref().unwrap()),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(err.is_some(), "body must end in an error, not cleanly");
    let text = String::from_utf8(got).unwrap();
    assert!(!text.contains("[DONE]"));
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert!(text.contains(r#""content":"Hello""#));
    assert_eq!(mock.streams_completed(), 0);
    assert_eq!(mock.streams_cancelled(), 0);

    // Non-streaming: no usable response at all.
    mock.push(Behavior::FailMidStream);
    let res = match send(mock.addr(), chat_request(&hi(false), None)).await {
        Ok(r) => r.into_body().collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(res.is_err());
}

#[tokio::test]
async fn client_disconnect_counts_as_cancelled() {
    let opts = MockOptions {
        reply: "a b c d e f g h i j k l m n o p".into(),
        chunk_delay: Duration::from_millis(30),
        ..MockOptions::default()
    };
    let mock = MockUpstream::start(opts).await.unwrap();
    let tcp = TcpStream::connect(mock.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    let resp = tx
        .send_request(chat_request(&hi(true), None))
        .await
        .unwrap();
    let mut body = resp.into_body();
    // Role chunk, then the first (delayed) word.
    let mut seen = String::new();
    while !seen.contains(r#""content":"a""#) {
        let f = body.frame().await.expect(&seen).unwrap();
        seen.push_str(std::str::from_utf8(f.data_ref().unwrap()).unwrap());
    }
    drop(body);
    drop(tx);
    conn_task.abort();
    assert!(
        mock.wait_for(|m| m.streams_cancelled() == 1, WAIT).await,
        "cancel not seen"
    );
    assert_eq!(mock.streams_completed(), 0);

    // set_chunk_delay applies to later streams.
    mock.set_chunk_delay(Duration::ZERO);
    let t = Instant::now();
    post(mock.addr(), &hi(true)).await;
    assert!(t.elapsed() < Duration::from_millis(300));
    assert!(mock.wait_for(|m| m.streams_completed() == 1, WAIT).await);
}

#[tokio::test]
async fn models_and_unknown_paths() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let req = Request::get("/v1/models")
        .header("host", "mock")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(mock.addr(), req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
    );
    let req = Request::get("/nope")
        .header("host", "mock")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(mock.addr(), req).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(mock.requests(), 0);

    let (status, _, body) = post(mock.addr(), &json!("not an object")).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let tcp = TcpStream::connect(mock.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..50 {
        tx.ready().await.unwrap();
        let resp = tx
            .send_request(chat_request(&hi(i % 2 == 0), None))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(mock.requests(), 50);
    assert!(mock.wait_for(|m| m.streams_completed() == 25, WAIT).await);
}

#[tokio::test]
async fn binary_prints_address_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--reply", "bin reply", "--model", "bin-model"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .expect("listening line")
        .parse()
        .unwrap();
    let (status, _, body) = post(addr, &json!({"messages": []})).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "bin reply");
    assert_eq!(v["model"], "bin-model");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test]
async fn the_chunk_delay_can_be_changed_over_http() {
    let opts = MockOptions {
        reply: "a b c d".into(),
        ..MockOptions::default()
    };
    let mock = MockUpstream::start(opts).await.unwrap();
    let put = |body: &'static str| {
        Request::put(clawdbot_bench::mock::CHUNK_DELAY_PATH)
            .header("host", "mock")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let resp = send(mock.addr(), put("soon")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = send(mock.addr(), put("100")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Four words, each after 100 ms.
    let t = Instant::now();
    post(mock.addr(), &hi(true)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    send(mock.addr(), put("0")).await.unwrap();
    let t = Instant::now();
    post(mock.addr(), &hi(true)).await;
    assert!(t.elapsed() < Duration::from_millis(300));
}
