//! Sessions shared through the real Redis on 127.0.0.1:6379 (or
//! `CLAWDBOT_TEST_REDIS_URL`; `scripts/ensure-services.sh` starts it): two
//! `bot-runtime` processes in front of one mock upstream, a replica killed
//! mid-turn, and Redis cut and restored by a proxy. Each test uses its own
//! key prefix and deletes its keys after.

mod common;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot_bench::mock::{Behavior, MockUpstream};
use clawdbot_config::Secret;
use common::*;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// One `bot-runtime` process; killed on drop.
struct Replica {
    child: Child,
    base: String,
    data_dir: std::path::PathBuf,
}

impl Replica {
    async fn start(mock: &MockUpstream, prefix: &Prefix, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let data_dir = temp_dir("replica");
        let mut cmd = runtime_command();
        cmd.env("CLAWDBOT_LISTEN", format!("127.0.0.1:{port}"))
            .env("MODEL_ENDPOINT", mock.base_url())
            .env("MODEL_NAME", "mock-model")
            .env("REDIS_URL", redis_url())
            .env("CLAWDBOT_REDIS__KEY_PREFIX", &prefix.0)
            .env("CLAWDBOT_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND", "0")
            .env("CLAWDBOT_SERVER__DATA_DIR", &data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap();
        let r = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
        };
        r.wait_ready().await;
        r
    }

    async fn wait_ready(&self) {
        let (_, body) = wait_ready(&self.base).await;
        assert_eq!(body["checks"]["redis"], "ok", "{body}");
    }

    async fn chat(&self, body: Value) -> (u16, Value) {
        post_json(&format!("{}/api/v1/chat", self.base), body).await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `(role, content)` of the messages the model got last.
fn sent_to_model(mock: &MockUpstream) -> Vec<(String, String)> {
    let req = mock.last_request().expect("a model request");
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_conversation_alternating_between_two_replicas_keeps_one_history() {
    let mock = mock().await;
    let prefix = Prefix::fresh();
    let a = Replica::start(&mock, &prefix, &[]).await;
    let b = Replica::start(&mock, &prefix, &[]).await;

    let mut sid = Value::Null;
    let mut expected = Vec::new();
    for (i, replica) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (q, r) = (format!("q{i}"), format!("r{i}"));
        mock.push(Behavior::Reply(r.clone()));
        let mut body = json!({"message": q});
        if !sid.is_null() {
            body["session_id"] = sid.clone();
        }
        let (s, reply) = replica.chat(body).await;
        assert_eq!(s, 200, "turn {i}: {reply}");
        assert_eq!(reply["reply"], r.as_str());
        if sid.is_null() {
            sid = reply["session_id"].clone();
        } else {
            assert_eq!(reply["session_id"], sid);
        }
        expected.push(("user".to_owned(), q));
        assert_eq!(
            sent_to_model(&mock),
            expected,
            "turn {i} got the whole history"
        );
        expected.push(("assistant".to_owned(), r));
    }
}

#[tokio::test]
async fn concurrent_turns_on_one_session_serialize_across_replicas() {
    let mock = mock().await;
    let prefix = Prefix::fresh();
    let waits = Replica::start(&mock, &prefix, &[]).await;
    let impatient = Replica::start(
        &mock,
        &prefix,
        &[("CLAWDBOT_SESSIONS__TURN_WAIT_SECS", "0")],
    )
    .await;
    mock.push(Behavior::Reply("r0".into()));
    let (s, first) = waits.chat(json!({"message": "q0"})).await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].clone();

    // A slow turn on one replica: the other, with no turn wait, gets 409 at once.
    mock.push(Behavior::Slow(Duration::from_millis(800)));
    let slow = tokio::spawn({
        let url = format!("{}/api/v1/chat", waits.base);
        let sid = sid.clone();
        async move { post_json(&url, json!({"message": "q1", "session_id": sid})).await }
    });
    assert!(
        mock.wait_for(|m| m.requests() == 2, Duration::from_secs(5))
            .await
    );
    let (s, busy) = impatient
        .chat(json!({"message": "nope", "session_id": sid}))
        .await;
    assert_eq!(s, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "session_busy");
    assert_eq!(slow.await.unwrap().0, 200);

    // Now the other way round: the second turn waits for the first and
    // sees its exchange.
    mock.push(Behavior::Slow(Duration::from_millis(800)));
    let started = Instant::now();
    let slow = tokio::spawn({
        let url = format!("{}/api/v1/chat", impatient.base);
        let sid = sid.clone();
        async move { post_json(&url, json!({"message": "q2", "session_id": sid})).await }
    });
    assert!(
        mock.wait_for(|m| m.requests() == 3, Duration::from_secs(5))
            .await
    );
    mock.push(Behavior::Reply("r3".into()));
    let (s, second) = waits
        .chat(json!({"message": "q3", "session_id": sid}))
        .await;
    assert_eq!(s, 200, "{second}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let (s, first) = slow.await.unwrap();
    assert_eq!(s, 200, "{first}");
    let sent = sent_to_model(&mock);
    let users: Vec<_> = sent
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(users, ["q0", "q1", "q2", "q3"], "{sent:?}");
}

#[tokio::test]
async fn a_replica_killed_mid_turn_blocks_its_session_until_the_lock_expires() {
    let mock = mock().await;
    let prefix = Prefix::fresh();
    let lock = [("CLAWDBOT_REDIS__LOCK_TTL_MS", "1500")];
    let mut dies = Replica::start(&mock, &prefix, &lock).await;
    let survives = Replica::start(
        &mock,
        &prefix,
        &[lock[0], ("CLAWDBOT_SESSIONS__TURN_WAIT_SECS", "0")],
    )
    .await;
    mock.push(Behavior::Reply("r0".into()));
    let (s, first) = dies.chat(json!({"message": "q0"})).await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].clone();

    mock.push(Behavior::Hang);
    let _hung = tokio::spawn({
        let url = format!("{}/api/v1/chat", dies.base);
        let sid = sid.clone();
        async move { post_json(&url, json!({"message": "lost", "session_id": sid})).await }
    });
    assert!(
        mock.wait_for(|m| m.requests() == 2, Duration::from_secs(5))
            .await
    );
    dies.kill();
    let killed = Instant::now();

    let (s, busy) = survives
        .chat(json!({"message": "q1", "session_id": sid}))
        .await;
    assert_eq!(s, 409, "the dead replica's lock still holds: {busy}");
    let usable = loop {
        let (s, body) = survives
            .chat(json!({"message": "q1", "session_id": sid}))
            .await;
        match s {
            200 => break killed.elapsed(),
            409 => {
                assert!(killed.elapsed() < Duration::from_secs(5), "{body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => panic!("{s} {body}"),
        }
    };
    // The lock ttl (1.5 s), plus polling and scheduling slack.
    assert!(usable <= Duration::from_secs(3), "{usable:?}");
    assert_eq!(
        sent_to_model(&mock),
        pairs(&[("user", "q0"), ("assistant", "r0"), ("user", "q1")]),
        "the killed turn left nothing behind"
    );
}

/// A TCP proxy in front of Redis that can cut every connection and refuse
/// new ones until restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let pipes: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = tokio::spawn({
            let (up, pipes) = (up.clone(), pipes.clone());
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let target = target.clone();
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    pipes.lock().unwrap().push(pipe.abort_handle());
                }
            }
        });
        Self {
            addr,
            up,
            pipes,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

#[tokio::test]
async fn redis_cut_gives_503_naming_redis_and_recovers_by_itself() {
    let target = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = Proxy::start(target).await;
    let mock = mock().await;
    let prefix = Prefix::fresh();
    let rt = start(config_for(Some(&mock), |c| {
        c.redis.url = Some(Secret::new(format!("redis://{}", proxy.addr)));
        c.redis.key_prefix = prefix.0.clone();
    }))
    .await;
    mock.push(Behavior::Reply("r0".into()));
    let (s, first) = post_json(&rt.url("/api/v1/chat"), json!({"message": "q0"})).await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].clone();

    proxy.cut();
    for body in [
        json!({"message": "q1", "session_id": sid}),
        json!({"message": "new"}),
    ] {
        let started = Instant::now();
        let (s, err) = post_json(&rt.url("/api/v1/chat"), body).await;
        assert_eq!(s, 503, "{err}");
        let e = assert_error_shape(&err);
        assert_eq!(e["type"], "unavailable_error");
        assert_eq!(e["code"], "redis_unavailable");
        assert!(e["message"].as_str().unwrap().contains("Redis"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "fails fast: {:?}",
            started.elapsed()
        );
    }
    let r = client().get(rt.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["failing"], json!(["redis"]), "{ready}");
    let metrics = rt.metrics_text().await;
    assert!(
        metrics.contains("clawdbot_redis_errors_total{op="),
        "{metrics}"
    );
    assert_eq!(mock.requests(), 1, "no model call without Redis");

    proxy.restore();
    mock.set_default(Behavior::Reply("r1".into()));
    let restored = Instant::now();
    loop {
        let (s, body) = post_json(
            &rt.url("/api/v1/chat"),
            json!({"message": "q1", "session_id": sid}),
        )
        .await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{body}");
        assert!(
            restored.elapsed() < Duration::from_secs(10),
            "no recovery: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sent_to_model(&mock),
        pairs(&[("user", "q0"), ("assistant", "r0"), ("user", "q1")]),
        "the session outlived the outage"
    );
    let r = client().get(rt.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_stream_longer_than_the_lock_ttl_keeps_its_session_locked() {
    let mock = mock_with("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", Duration::from_millis(150)).await;
    let prefix = Prefix::fresh();
    let rt = start(config_for(Some(&mock), |c| {
        c.redis.url = Some(Secret::new(redis_url()));
        c.redis.key_prefix = prefix.0.clone();
        c.redis.lock_ttl_ms = 1_000;
        c.redis.command_timeout_ms = 300;
        c.sessions.turn_wait_secs = 0;
    }))
    .await;
    let (s, first) = post_json(&rt.url("/api/v1/chat"), json!({"message": "q0"})).await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].clone();

    let stream = tokio::spawn({
        let url = rt.url("/api/v1/chat");
        let sid = sid.clone();
        async move {
            let r = client()
                .post(url)
                .json(&json!({"message": "q1", "session_id": sid, "stream": true}))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }
    });
    // Well past the lock ttl, the stream still holds the session.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, busy) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "q2", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 409, "{busy}");

    let events = sse_events(&stream.await.unwrap());
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    let (s, body) = post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "q2", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let users: Vec<_> = sent_to_model(&mock)
        .into_iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(users, ["q0", "q1", "q2"], "the streamed turn was recorded");
}
