//! The real binary with a PostgreSQL conversation log: SIGTERM in the middle
//! of load loses and duplicates nothing (after a restart every acknowledged
//! exchange is logged exactly once), and `export` streams the rows.

mod common;
mod logdb;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use logdb::*;
use serde_json::{Value, json};
use sqlx::Connection;

fn command(db_url: &str, data_dir: &Path) -> Command {
    let mut cmd = runtime_command();
    cmd.env("DATABASE_URL", db_url)
        .env("CLAWDBOT_SERVER__DATA_DIR", data_dir)
        .env("RUST_LOG", "warn");
    cmd
}

fn spawn(db_url: &str, data_dir: &Path, mock: &str) -> (Child, String) {
    let port = free_port();
    let child = command(db_url, data_dir)
        .env("CLAWDBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("MODEL_ENDPOINT", mock)
        .env("MODEL_NAME", "mock-model")
        .env("CLAWDBOT_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND", "0")
        .env("CLAWDBOT_SERVER__DRAIN_DEADLINE_SECS", "10")
        // Slow batches, so SIGTERM finds exchanges still queued.
        .env("CLAWDBOT_LOGS__FLUSH_INTERVAL_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_exit(child: &mut Child) {
    let started = Instant::now();
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request; `true` when the client got the complete answer.
async fn send(http: &reqwest::Client, base: &str, n: usize, msg: &str) -> bool {
    let body = match n % 3 {
        0 => json!({"message": msg}),
        1 => json!({"message": msg, "stream": true}),
        _ => json!({"model": "mock-model", "messages": [{"role": "user", "content": msg}]}),
    };
    let path = if n % 3 == 2 {
        "/v1/chat/completions"
    } else {
        "/api/v1/chat"
    };
    let Ok(r) = http.post(format!("{base}{path}")).json(&body).send().await else {
        return false;
    };
    if r.status() != 200 {
        return false;
    }
    let Ok(text) = r.text().await else {
        return false;
    };
    if n % 3 == 1 {
        sse_events(&text).last().is_some_and(|(e, _)| e == "done")
    } else {
        serde_json::from_str::<Value>(&text).is_ok()
    }
}

#[tokio::test]
async fn sigterm_during_load_then_restart_logs_every_acknowledged_exchange_once() {
    let db = TestDb::create(Engine::Postgres).await;
    let data = temp_dir("logproc");
    let mock = mock_with("a b c", Duration::from_millis(5)).await;
    let (mut child, base) = spawn(&db.url, &data, &mock.base_url());
    wait_ready(&base).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..6)
        .map(|t| {
            let (base, acked) = (base.clone(), acked.clone());
            tokio::spawn(async move {
                let http = client();
                for i in 0.. {
                    let msg = format!("m-{t}-{i}");
                    if send(&http, &base, t + i, &msg).await {
                        acked.lock().unwrap().push(msg);
                    } else if i > 0 {
                        return; // refused: the server is draining
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    sigterm(&child);
    for l in load {
        let _ = l.await;
    }
    wait_exit(&mut child).await;
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() > 20, "load ran: {}", acked.len());

    // Restart: anything spilled at shutdown is replayed at start.
    let (mut child, base) = spawn(&db.url, &data, &mock.base_url());
    wait_ready(&base).await;
    let spill = data.join("log-spill.jsonl");
    let gone = eventually(Duration::from_secs(20), || async {
        !spill.exists() && !data.join("log-spill.jsonl.replaying").exists()
    })
    .await;
    assert!(gone, "spill file replayed");
    sigterm(&child);
    wait_exit(&mut child).await;

    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT user_input FROM conversation_logs")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (u,) in rows {
        *counts.entry(u).or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicates: {dup:?}");
    let logged: HashSet<String> = counts.into_keys().collect();
    let missing: Vec<_> = acked.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not logged: {missing:?}"
    );
    // A request can be logged and then lose its connection before the
    // client reads the reply; that is the only allowed extra.
    assert!(logged.len() >= acked.len());
    eprintln!(
        "acknowledged {}, logged {} (SIGTERM mid-load, restart)",
        acked.len(),
        logged.len()
    );
    c.close().await.unwrap();

    // The compliance export sees the same rows, in time order.
    let out = command(&db.url, &data)
        .args([
            "export",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2999-01-01T00:00:00Z",
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), logged.len());
    let times: Vec<String> = lines
        .iter()
        .map(|l| l["created_at"].as_str().unwrap().to_owned())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    let exported: HashSet<String> = lines
        .iter()
        .map(|l| l["user_input"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported, logged);

    let csv = command(&db.url, &data)
        .args([
            "export",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2999-01-01T00:00:00Z",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(csv.status.success());
    assert_eq!(
        String::from_utf8(csv.stdout).unwrap().lines().count(),
        logged.len() + 1
    );

    let bad = command(&db.url, &data)
        .args([
            "export",
            "--since",
            "yesterday",
            "--until",
            "2999-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}
