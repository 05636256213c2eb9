//! Test harness: a bot-runtime served in-process on a random port over real
//! HTTP, in front of the mock upstream from `clawdbot-bench`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bot_runtime::AppState;
use clawdbot_bench::mock::{MockOptions, MockUpstream};
use clawdbot_config::RuntimeConfig;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct Runtime {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Runtime {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        let r = client().get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Starts the drain and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A config pointing at `mock`, with fast retries, no rate limit, and the
/// test's changes applied.
pub fn config_for(
    mock: Option<&MockUpstream>,
    change: impl FnOnce(&mut RuntimeConfig),
) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.rate_limit.requests_per_second = 0.0;
    cfg.server.drain_deadline_secs = 10;
    // Each runtime gets its own SQLite log file and spill file.
    cfg.server.data_dir = temp_dir("rt").display().to_string();
    if let Some(m) = mock {
        cfg.model.endpoint = Some(m.base_url());
        cfg.model.name = "mock-model".into();
        cfg.model.retry_backoff_ms = 5;
        cfg.model.timeout_secs = 5;
    }
    change(&mut cfg);
    cfg
}

pub async fn start(cfg: RuntimeConfig) -> Runtime {
    bot_runtime::support::tls::install_crypto_provider();
    let issues = clawdbot_config::validate(&cfg);
    assert!(issues.is_empty(), "test config invalid: {issues:?}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let provider = bot_runtime::chat::model::from_config(&cfg.model).unwrap();
    let state = AppState::new(cfg, provider).unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(bot_runtime::serve_state(state.clone(), listener, async {
        let _ = rx.await;
    }));
    Runtime {
        addr,
        state,
        stop: Some(tx),
        task,
    }
}

pub async fn mock() -> MockUpstream {
    MockUpstream::start(MockOptions::default()).await.unwrap()
}

pub async fn mock_with(reply: &str, chunk_delay: Duration) -> MockUpstream {
    MockUpstream::start(MockOptions {
        reply: reply.into(),
        chunk_delay,
        ..MockOptions::default()
    })
    .await
    .unwrap()
}

pub fn client() -> reqwest::Client {
    bot_runtime::support::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let r = client().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The whole body of a POST (an event stream read to its end).
pub async fn post_text(url: &str, body: Value) -> String {
    let r = client().post(url).json(&body).send().await.unwrap();
    r.text().await.unwrap()
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `(event, data)` pairs of an SSE body.
pub fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
                }
            }
            (event, data.join("\n"))
        })
        .filter(|(_, d)| !d.is_empty())
        .collect()
}

/// Asserts an error body in the OpenAI shape and returns it.
pub fn assert_error_shape(body: &Value) -> &Value {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message in {body}"
    );
    assert!(e["type"].is_string(), "error.type in {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "param/code keys in {body}"
    );
    e
}

/// A fresh directory under the system temp dir (left for the OS to clean).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "clawdbot-test-{tag}-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real binary with none of the caller's CLAWDBOT_/MODEL_/DATABASE_URL/
/// REDIS_URL variables, and its data dir in a fresh temp directory.
pub fn runtime_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAWDBOT_")
            || k.starts_with("MODEL_")
            || k == "DATABASE_URL"
            || k == "REDIS_URL"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("CLAWDBOT_SERVER__DATA_DIR", temp_dir("proc"));
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `/health/ready` until 200; returns how long it took and the body.
pub async fn wait_ready(base: &str) -> (Duration, Value) {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = client().get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            return (started.elapsed(), r.json().await.unwrap_or(Value::Null));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("bot-runtime at {base} did not become ready");
}

/// The test Redis (`CLAWDBOT_TEST_REDIS_URL`, else the machine's).
pub fn redis_url() -> String {
    std::env::var("CLAWDBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh key prefix whose keys are deleted on drop.
pub struct Prefix(pub String);

impl Prefix {
    pub fn fresh() -> Self {
        Self(format!("clawdbot-test:{:032x}:", rand::random::<u128>()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(mut c) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

/// SIGTERM, then everything the process wrote.
pub fn stop_and_collect(child: std::process::Child) -> std::process::Output {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Spawns `cmd` (a `runtime_command()` with its settings and stdio) on a
/// free port of `host` and waits until `/health/ready` answers. Returns the
/// process, its base URL on 127.0.0.1 and the port.
pub async fn spawn_ready(
    cmd: &mut std::process::Command,
    host: &str,
) -> (std::process::Child, String, u16) {
    let port = free_port();
    let child = cmd
        .env("CLAWDBOT_LISTEN", format!("{host}:{port}"))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    (child, base, port)
}
