//! The DingTalk Stream and Feishu long-connection clients against local
//! stand-ins for the platforms: an HTTP server for the endpoint call and a
//! WebSocket server the test script drives frame by frame.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use bot_runtime::im::dingtalk::stream as dingtalk;
use bot_runtime::im::feishu::frame::{self, Frame};
use bot_runtime::im::feishu::ws as feishu;
use bot_runtime::im::longconn::{LinkConfig, OutcomeHook};
use bot_runtime::im::{Accepted, Inbound, InboundSink, SignatureBinding, SinkError, SinkFuture};
use clawdbot_config::Secret;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

const WAIT: Duration = Duration::from_secs(3);

/// Records what it is handed (dedupe is the real sink's job, so it only
/// reports repeats); refuses everything while `fail` is set.
#[derive(Default)]
struct TestSink {
    got: Mutex<Vec<Inbound>>,
    fail: AtomicBool,
}

impl TestSink {
    fn got(&self) -> Vec<Inbound> {
        self.got.lock().unwrap().clone()
    }
}

impl InboundSink for TestSink {
    fn accept(&self, message: Inbound) -> SinkFuture<'_> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(SinkError("store unavailable".into()));
            }
            let mut got = self.got.lock().unwrap();
            let seen = got.iter().any(|m| m.delivery_id == message.delivery_id);
            got.push(message);
            Ok(if seen {
                Accepted::Duplicate
            } else {
                Accepted::New
            })
        })
    }

    fn accept_signed(&self, _message: Inbound, _binding: SignatureBinding) -> SinkFuture<'_> {
        // Long connections carry no signed callbacks.
        Box::pin(async { panic!("a long connection bound a webhook signature") })
    }
}

/// A client under test: what it handed over and reported, and its stop switch.
struct Running {
    sink: Arc<TestSink>,
    outcomes: Arc<Mutex<Vec<&'static str>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Spawns `run` with a fresh sink, an outcome recorder and a stop switch.
    fn start<F>(run: impl FnOnce(OutcomeHook, Arc<TestSink>, watch::Receiver<bool>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sink = Arc::new(TestSink::default());
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let hook: OutcomeHook = {
            let seen = outcomes.clone();
            Arc::new(move |o| seen.lock().unwrap().push(o))
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(hook, sink.clone(), stop_rx));
        Self {
            sink,
            outcomes,
            stop,
            task,
        }
    }

    fn outcomes(&self) -> Vec<&'static str> {
        self.outcomes.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        timeout(WAIT, self.task)
            .await
            .expect("client stops")
            .unwrap();
    }
}

type Answer = fn(usize, SocketAddr) -> Value;

/// The platform stand-in. `calls` yields the body of each endpoint call,
/// `conns` each WebSocket the client opens, with its request path and query.
struct Platform {
    api_base: String,
    calls: mpsc::UnboundedReceiver<Value>,
    conns: mpsc::UnboundedReceiver<(String, WebSocketStream<TcpStream>)>,
}

struct Endpoint {
    calls: AtomicUsize,
    tx: mpsc::UnboundedSender<Value>,
    ws_addr: SocketAddr,
    answer: Answer,
}

async fn endpoint_call(State(ep): State<Arc<Endpoint>>, Json(body): Json<Value>) -> Json<Value> {
    let n = ep.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = ep.tx.send(body);
    Json((ep.answer)(n, ep.ws_addr))
}

async fn platform(path: &'static str, answer: Answer) -> Platform {
    platform_with(path, answer, Router::new()).await
}

/// The platform stand-in with more routes on its HTTP side (reply APIs).
async fn platform_with(path: &'static str, answer: Answer, extra: Router) -> Platform {
    let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    let (conn_tx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ws_listener.accept().await {
            let mut target = String::new();
            // The error type is tungstenite's, not ours to shrink.
            #[allow(clippy::result_large_err)]
            let remember = |req: &Request, resp: Response| {
                target = req.uri().to_string();
                Ok(resp)
            };
            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, remember).await {
                let _ = conn_tx.send((target, ws));
            }
        }
    });

    let (tx, calls) = mpsc::unbounded_channel();
    let ep = Arc::new(Endpoint {
        calls: AtomicUsize::new(0),
        tx,
        ws_addr,
        answer,
    });
    let app = Router::new()
        .route(path, post(endpoint_call))
        .with_state(ep)
        .merge(extra);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}", http.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(http, app).await });
    Platform {
        api_base,
        calls,
        conns,
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for the client")
        .expect("platform stand-in stopped")
}

/// The next data message from the client, WebSocket pings and pongs skipped;
/// `None` once the client closed the connection.
async fn next_msg(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    loop {
        let msg = timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")?;
        match msg {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(m) => return Some(m),
        }
    }
}

// ---------------------------------------------------------------- DingTalk

fn dingtalk_answer(n: usize, ws: SocketAddr) -> Value {
    json!({ "endpoint": format!("ws://{ws}/connect"), "ticket": format!("ticket-{n}") })
}

fn dingtalk_message(msg_id: &str, text: &str) -> String {
    json!({
        "msgtype": "text",
        "text": { "content": text },
        "msgId": msg_id,
        "createAt": 1_700_000_000_000_i64,
        "conversationType": "1",
        "conversationId": "cid-1",
        "senderId": "$:LWCP_v1:$abc",
        "senderNick": "Ann",
        "senderStaffId": "staff-1",
        "chatbotUserId": "$:LWCP_v1:$bot",
        "robotCode": "ding-app",
        "isAdmin": false,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s",
        "sessionWebhookExpiredTime": 1_700_005_400_000_i64,
    })
    .to_string()
}

fn dingtalk_frame(kind: &str, topic: &str, message_id: &str, data: &str) -> Message {
    Message::text(
        json!({
            "specVersion": "1.0",
            "type": kind,
            "headers": {
                "topic": topic,
                "messageId": message_id,
                "contentType": "application/json",
                "time": "1700000000000",
            },
            "data": data,
        })
        .to_string(),
    )
}

async fn dingtalk_ack(ws: &mut WebSocketStream<TcpStream>) -> Value {
    match next_msg(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(t.as_str()).expect("ack is JSON"),
        other => panic!("expected a text ack, got {other:?}"),
    }
}

#[tokio::test]
async fn dingtalk_stream_acks_records_and_reconnects() {
    let mut p = platform(dingtalk::OPEN_PATH, dingtalk_answer).await;
    let client = Running::start(|hook, sink, stop| {
        let mut cfg = LinkConfig::new(
            &p.api_base,
            "ding-app",
            Secret::new("app-secret"),
            dingtalk::HEARTBEAT,
        );
        cfg.reconnect_base = Duration::from_millis(10);
        cfg.reconnect_max = Duration::from_millis(50);
        cfg.on_outcome = Some(hook);
        dingtalk::run(cfg, sink, stop)
    });
    let sink = client.sink.clone();

    // The open call carries the credentials and the one subscription.
    let body = next(&mut p.calls).await;
    assert_eq!(body["clientId"], "ding-app");
    assert_eq!(body["clientSecret"], "app-secret");
    assert_eq!(
        body["subscriptions"],
        json!([{ "type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get" }])
    );
    assert!(body["ua"].is_string() && body["localIp"].is_string());
    let (target, mut ws) = next(&mut p.conns).await;
    assert_eq!(target, "/connect?ticket=ticket-1");

    // Garbage is skipped; the connection stays up.
    ws.send(Message::text("not json")).await.unwrap();

    // SYSTEM ping: echoed with code 200 and the same data.
    let opaque = r#"{"opaque":"op-1"}"#;
    ws.send(dingtalk_frame("SYSTEM", "ping", "ping-1", opaque))
        .await
        .unwrap();
    let ack = dingtalk_ack(&mut ws).await;
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["messageId"], "ping-1");
    assert_eq!(ack["data"], opaque);

    // A robot message: recorded, then acked on its messageId.
    let msg = dingtalk_message("msg-1", "hello");
    ws.send(dingtalk_frame(
        "CALLBACK",
        dingtalk::BOT_TOPIC,
        "cb-1",
        &msg,
    ))
    .await
    .unwrap();
    let ack = dingtalk_ack(&mut ws).await;
    assert_eq!(
        ack,
        json!({
            "code": 200,
            "headers": { "messageId": "cb-1", "contentType": "application/json" },
            "message": "OK",
            "data": "{\"response\":null}",
        })
    );
    let got = sink.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery_id, "msg-1");
    assert_eq!(got[0].text, "hello");

    // The same message again: handed over (the sink dedupes) and acked.
    ws.send(dingtalk_frame(
        "CALLBACK",
        dingtalk::BOT_TOPIC,
        "cb-1",
        &msg,
    ))
    .await
    .unwrap();
    let ack = dingtalk_ack(&mut ws).await;
    assert_eq!(
        (ack["code"].as_i64(), ack["headers"]["messageId"].as_str()),
        (Some(200), Some("cb-1"))
    );
    assert_eq!(sink.got().len(), 2);

    // SYSTEM disconnect: the client closes and comes back with a new ticket.
    ws.send(dingtalk_frame(
        "SYSTEM",
        "disconnect",
        "bye-1",
        r#"{"reason":"upgrade"}"#,
    ))
    .await
    .unwrap();
    while next_msg(&mut ws).await.is_some() {}
    let body = next(&mut p.calls).await;
    assert_eq!(body["clientId"], "ding-app");
    let (target, mut ws) = next(&mut p.conns).await;
    assert_eq!(target, "/connect?ticket=ticket-2");

    // A picture (no text): acked, not handed over, reported as ignored.
    let mut picture: Value = serde_json::from_str(&dingtalk_message("msg-pic", "")).unwrap();
    picture["msgtype"] = json!("picture");
    ws.send(dingtalk_frame(
        "CALLBACK",
        dingtalk::BOT_TOPIC,
        "cb-pic",
        &picture.to_string(),
    ))
    .await
    .unwrap();
    let ack = dingtalk_ack(&mut ws).await;
    assert_eq!(
        (ack["code"].clone(), ack["headers"]["messageId"].clone()),
        (json!(200), json!("cb-pic"))
    );

    // The sink fails: no success ack, so DingTalk delivers it again.
    sink.fail.store(true, Ordering::SeqCst);
    ws.send(dingtalk_frame(
        "CALLBACK",
        dingtalk::BOT_TOPIC,
        "cb-3",
        &dingtalk_message("msg-2", "again"),
    ))
    .await
    .unwrap();
    let ack = dingtalk_ack(&mut ws).await;
    assert_eq!(ack["headers"]["messageId"], "cb-3");
    assert_ne!(ack["code"], 200);
    assert_eq!(sink.got().len(), 2);
    // The sink counts what it records (accepted, duplicate, unavailable);
    // the hook hears only the rest.
    assert_eq!(client.outcomes(), ["ignored"]);
    client.stop().await;
}

#[tokio::test]
async fn dingtalk_stream_retries_a_failed_open_call() {
    fn answer(n: usize, ws: SocketAddr) -> Value {
        if n == 1 {
            json!({ "code": "InvalidAuthentication" })
        } else {
            dingtalk_answer(n, ws)
        }
    }
    let mut p = platform(dingtalk::OPEN_PATH, answer).await;
    let client = Running::start(|_, sink, stop| {
        let mut cfg = LinkConfig::new(
            &p.api_base,
            "ding-app",
            Secret::new("s"),
            dingtalk::HEARTBEAT,
        );
        cfg.reconnect_base = Duration::from_millis(10);
        dingtalk::run(cfg, sink, stop)
    });
    next(&mut p.calls).await;
    next(&mut p.calls).await;
    let (target, _ws) = next(&mut p.conns).await;
    assert_eq!(target, "/connect?ticket=ticket-2");
    client.stop().await;
}

// ------------------------------------------------------------------ Feishu

fn feishu_answer(n: usize, ws: SocketAddr) -> Value {
    if n == 1 {
        // The first call meets a busy server: the client must retry.
        return json!({ "code": 1, "msg": "system busy" });
    }
    json!({
        "code": 0,
        "msg": "ok",
        "data": {
            "URL": format!("ws://{ws}/ws/v2?device_id=dev-{n}&service_id=77&access_key=k"),
            "ClientConfig": {
                "ReconnectCount": -1,
                "ReconnectInterval": 120,
                "ReconnectNonce": 30,
                "PingInterval": 120,
            },
        },
    })
}

fn feishu_event(event_id: &str, message_id: &str, text: &str) -> Vec<u8> {
    json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "im.message.receive_v1",
            "create_time": "1700000000000",
            "token": "",
            "app_id": "cli_test",
            "tenant_key": "tk",
        },
        "event": {
            "sender": {
                "sender_id": { "open_id": "ou_user", "user_id": "u1", "union_id": "on_user" },
                "sender_type": "user",
                "tenant_key": "tk",
            },
            "message": {
                "message_id": message_id,
                "root_id": "",
                "parent_id": "",
                "create_time": "1700000000000",
                "chat_id": "oc_chat",
                "chat_type": "p2p",
                "message_type": "text",
                "content": json!({ "text": text }).to_string(),
                "mentions": [],
            },
        },
    })
    .to_string()
    .into_bytes()
}

fn data_frame(seq_id: u64, message_id: &str, sum: usize, seq: usize, payload: &[u8]) -> Message {
    let mut f = Frame {
        seq_id,
        log_id: 1000 + seq_id,
        service: 77,
        method: frame::METHOD_DATA,
        payload: payload.to_vec(),
        ..Frame::default()
    };
    f.push_header("type", "event");
    f.push_header("message_id", message_id);
    f.push_header("sum", sum.to_string());
    f.push_header("seq", seq.to_string());
    f.push_header("trace_id", "trace-1");
    Message::Binary(frame::encode(&f).into())
}

async fn feishu_frame(ws: &mut WebSocketStream<TcpStream>) -> Frame {
    match next_msg(ws).await {
        Some(Message::Binary(b)) => frame::decode(&b).expect("client frames decode"),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// The client pings as soon as it is connected; answer with a pong that
/// carries a ClientConfig.
async fn feishu_expect_ping(ws: &mut WebSocketStream<TcpStream>) {
    let ping = feishu_frame(ws).await;
    assert_eq!(ping.method, frame::METHOD_CONTROL);
    assert_eq!(ping.service, 77);
    assert_eq!(ping.header("type"), Some("ping"));
    let mut pong = ping.clone();
    pong.headers.clear();
    pong.push_header("type", "pong");
    pong.payload = br#"{"PingInterval":90}"#.to_vec();
    ws.send(Message::Binary(frame::encode(&pong).into()))
        .await
        .unwrap();
}

fn answer_code(f: &Frame) -> i64 {
    let v: Value = serde_json::from_slice(&f.payload).expect("answer payload is JSON");
    v["code"].as_i64().expect("answer has a code")
}

#[tokio::test]
async fn feishu_ws_answers_records_reassembles_and_reconnects() {
    let mut p = platform(feishu::ENDPOINT_PATH, feishu_answer).await;
    let client = Running::start(|hook, sink, stop| {
        let mut cfg = LinkConfig::new(
            &p.api_base,
            "cli_test",
            Secret::new("app-secret"),
            feishu::HEARTBEAT,
        );
        cfg.reconnect_base = Duration::from_millis(10);
        cfg.reconnect_max = Duration::from_millis(50);
        cfg.on_outcome = Some(hook);
        feishu::run(cfg, sink, stop)
    });
    let sink = client.sink.clone();

    // Busy first, then an endpoint; both calls carry the credentials.
    for _ in 0..2 {
        let body = next(&mut p.calls).await;
        assert_eq!(
            body,
            json!({ "AppID": "cli_test", "AppSecret": "app-secret" })
        );
    }
    let (target, mut ws) = next(&mut p.conns).await;
    assert!(target.starts_with("/ws/v2?device_id=dev-2&"), "{target}");
    feishu_expect_ping(&mut ws).await;

    // Garbage is skipped; the connection stays up.
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();

    // An event: recorded, then answered on the same frame.
    let event = feishu_event("ev-1", "om_1", "hello");
    ws.send(data_frame(5, "fm-1", 1, 0, &event)).await.unwrap();
    let answer = feishu_frame(&mut ws).await;
    assert_eq!(
        (answer.seq_id, answer.log_id, answer.service),
        (5, 1005, 77)
    );
    assert_eq!(answer.method, frame::METHOD_DATA);
    assert_eq!(answer.header("message_id"), Some("fm-1"));
    assert_eq!(answer.header("type"), Some("event"));
    assert!(
        answer
            .header("biz_rt")
            .is_some_and(|ms| ms.parse::<u64>().is_ok())
    );
    assert_eq!(answer.payload, br#"{"code":200}"#);
    let got = sink.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery_id, "ev-1");
    assert_eq!(got[0].text, "hello");

    // The same event again: handed over (the sink dedupes) and answered 200.
    ws.send(data_frame(6, "fm-1", 1, 0, &event)).await.unwrap();
    let answer = feishu_frame(&mut ws).await;
    assert_eq!(answer.header("message_id"), Some("fm-1"));
    assert_eq!(answer_code(&answer), 200);
    assert_eq!(sink.got().len(), 2);

    // An event split in two, parts out of order: one answer, once whole.
    let event = feishu_event("ev-2", "om_2", "split in two");
    let (a, b) = event.split_at(event.len() / 2);
    ws.send(data_frame(7, "fm-2", 2, 1, b)).await.unwrap();
    ws.send(data_frame(8, "fm-2", 2, 0, a)).await.unwrap();
    let answer = feishu_frame(&mut ws).await;
    assert_eq!(answer.header("message_id"), Some("fm-2"));
    assert_eq!(answer_code(&answer), 200);
    let got = sink.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].delivery_id, "ev-2");
    assert_eq!(got[2].text, "split in two");

    // The server closes: a fresh endpoint call, a new connection.
    ws.close(None).await.unwrap();
    let body = next(&mut p.calls).await;
    assert_eq!(body["AppID"], "cli_test");
    let (target, mut ws) = next(&mut p.conns).await;
    assert!(target.starts_with("/ws/v2?device_id=dev-3&"), "{target}");
    feishu_expect_ping(&mut ws).await;

    // An event we do not handle: answered 200, not handed over, reported as ignored.
    let other = json!({
        "schema": "2.0",
        "header": {"event_id": "ev-other", "event_type": "im.chat.updated_v1", "token": "t"},
        "event": {},
    });
    ws.send(data_frame(
        8,
        "fm-other",
        1,
        0,
        other.to_string().as_bytes(),
    ))
    .await
    .unwrap();
    let answer = feishu_frame(&mut ws).await;
    assert_eq!(answer.header("message_id"), Some("fm-other"));
    assert_eq!(answer_code(&answer), 200);

    // The sink fails: answered 500, so Feishu delivers it again.
    sink.fail.store(true, Ordering::SeqCst);
    ws.send(data_frame(
        9,
        "fm-3",
        1,
        0,
        &feishu_event("ev-3", "om_3", "lost?"),
    ))
    .await
    .unwrap();
    let answer = feishu_frame(&mut ws).await;
    assert_eq!(answer.header("message_id"), Some("fm-3"));
    assert_eq!(answer_code(&answer), 500);
    assert_eq!(sink.got().len(), 3);
    // The sink counts what it records; the hook hears only the rest.
    assert_eq!(client.outcomes(), ["ignored"]);
    client.stop().await;
}

/// The whole runtime in Stream mode: a message delivered twice over the
/// stream (DingTalk's redelivery after a slow ack) is acked both times and
/// answered once, through the session webhook on the platform's host.
#[tokio::test]
async fn dingtalk_stream_redelivery_is_answered_once_by_the_runtime() {
    let replies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = replies.clone();
    let extra = Router::new().route(
        "/robot/sendBySession",
        post(move |Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                Json(json!({"errcode": 0, "errmsg": "ok"}))
            }
        }),
    );
    let mut p = platform_with(dingtalk::OPEN_PATH, dingtalk_answer, extra).await;
    let model = common::mock().await;
    let api_base = p.api_base.clone();
    let rt = common::start(common::config_for(Some(&model), |c| {
        c.dingtalk.enabled = true;
        c.dingtalk.mode = clawdbot_config::DingTalkMode::Stream;
        c.dingtalk.app_key = Some("ding-app".into());
        c.dingtalk.app_secret = Some(Secret::new("app-secret"));
        c.dingtalk.api_base = api_base;
    }))
    .await;
    let body = next(&mut p.calls).await;
    assert_eq!(body["clientId"], "ding-app");
    let (_, mut ws) = next(&mut p.conns).await;

    let expires = bot_runtime::support::timefmt::now_ms() + 3_600_000;
    let mut msg: Value =
        serde_json::from_str(&dingtalk_message("msg-rt-1", "hello there")).unwrap();
    msg["sessionWebhook"] = json!(format!("{}/robot/sendBySession?session=s1", p.api_base));
    msg["sessionWebhookExpiredTime"] = json!(expires);
    for frame_id in ["cb-1", "cb-2"] {
        ws.send(dingtalk_frame(
            "CALLBACK",
            dingtalk::BOT_TOPIC,
            frame_id,
            &msg.to_string(),
        ))
        .await
        .unwrap();
        let ack = dingtalk_ack(&mut ws).await;
        assert_eq!(ack["code"], 200, "{ack}");
        assert_eq!(ack["headers"]["messageId"], frame_id);
    }
    let answered = async {
        while replies.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(10), answered)
        .await
        .expect("no reply on the session webhook");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = replies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "answered more than once: {got:?}");
    assert_eq!(got[0]["msgtype"], "markdown");
    assert_eq!(got[0]["markdown"]["text"], "Hello from the mock upstream.");
    assert_eq!(model.requests(), 1);
    let metrics = rt.metrics_text().await;
    assert!(
        metrics.contains(
            r#"clawdbot_webhook_requests_total{channel="dingtalk",outcome="duplicate"} 1"#
        ),
        "{metrics}"
    );
    rt.stop().await;
}
