//! The `bot-runtime` binary as users run it: CLI, config errors, start-up,
//! and draining on SIGTERM.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clawdbot_bench::mock::MockUpstream;
use common::*;
use serde_json::{Value, json};

fn clean_command() -> Command {
    runtime_command()
}

fn write_config(text: &str) -> tempfile_path::Path {
    tempfile_path::Path::with(text)
}

/// A tiny temp-file helper (no extra crate needed).
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn with(text: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "clawdbot-test-{:032x}.yaml",
                rand::random::<u128>()
            ));
            std::fs::write(&p, text).unwrap();
            Self(p)
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn check_config_names_the_bad_key_and_why() {
    let bad = write_config("model:\n  temperature: 7\nserver:\n  listen: nowhere\n");
    let out = clean_command()
        .args(["check-config", "--config"])
        .arg(&bad.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("model.temperature"),
        "{err}"
    );

    let typo = write_config("modle:\n  name: x\n");
    let out = clean_command()
        .args(["check-config", "--config"])
        .arg(&typo.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("modle"));

    let out = clean_command()
        .args(["check-config", "--config", "/no/such/file.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = clean_command()
        .arg("check-config")
        .env("CLAWDBOT_MODEL__MAX_TOKENS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLAWDBOT_MODEL__MAX_TOKENS"));

    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/config.example.yaml"
    );
    let out = clean_command()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary in front of `mock`, ready, with the given drain deadline.
async fn spawn_in_front_of(mock: &MockUpstream, drain_secs: u32) -> (std::process::Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = clean_command()
        .env("CLAWDBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("MODEL_ENDPOINT", mock.base_url())
        .env("MODEL_NAME", "mock-model")
        .env(
            "CLAWDBOT_SERVER__DRAIN_DEADLINE_SECS",
            drain_secs.to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_ready(&base).await;
    (child, base)
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_and_refuses_new_work() {
    let mock = mock_with("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", Duration::from_millis(150)).await;
    let (mut child, base) = spawn_in_front_of(&mock, 20).await;

    let stream = tokio::spawn({
        let base = base.clone();
        async move {
            let r = client()
                .post(format!("{base}/api/v1/chat"))
                .json(&json!({"message": "hi", "stream": true}))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }
    });
    assert!(
        mock.wait_for(|m| m.requests() == 1, Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "readiness turns 503 at once");
    let (s, b) = post_json(&format!("{base}/api/v1/chat"), json!({"message": "new"})).await;
    assert_eq!(s, 503, "new work is refused: {b}");

    let text = stream.await.unwrap();
    let events = sse_events(&text);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "done", "the in-flight stream finished: {events:?}");
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(done["reply"], "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10");

    let started = Instant::now();
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let mock = mock_with(
        "a b c d e f g h i j k l m n o p q r s t",
        Duration::from_millis(500),
    )
    .await;
    let (mut child, base) = spawn_in_front_of(&mock, 1).await;
    let _stream = tokio::spawn({
        let base = base.clone();
        async move {
            let r = client()
                .post(format!("{base}/api/v1/chat"))
                .json(&json!({"message": "hi", "stream": true}))
                .send()
                .await;
            if let Ok(r) = r {
                let _ = r.text().await;
            }
        }
    });
    assert!(
        mock.wait_for(|m| m.requests() == 1, Duration::from_secs(5))
            .await
    );
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "shutdown not bounded by the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_bad_keyring_is_refused_naming_the_key_and_never_showing_it() {
    // 32 bytes given to SM4, which takes 16.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let keyring = format!("k2026:sm4-gcm:{key}");
    let out = clean_command()
        .arg("check-config")
        .env("CLAWDBOT_ENCRYPTION__ENABLED", "true")
        .env("CLAWDBOT_ENCRYPTION__KEYS", &keyring)
        .env("CLAWDBOT_ENCRYPTION__ACTIVE", "k2026")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"k2026\"") && err.contains("16-byte key"),
        "{err}"
    );
    assert!(!err.contains(key), "{err}");
    // The server refuses before it listens; an unknown algorithm likewise.
    let out = clean_command()
        .env("CLAWDBOT_ENCRYPTION__ENABLED", "true")
        .env("CLAWDBOT_ENCRYPTION__KEYS", format!("old:des:{key}"))
        .env("CLAWDBOT_ENCRYPTION__ACTIVE", "old")
        .env("CLAWDBOT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"old\": unknown algorithm \"des\""), "{err}");
    // A key file whose keys do not include the active one.
    let file = write_config(&format!("# rotated\nk1:aes-256-gcm:{key}\n"));
    let out = clean_command()
        .arg("check-config")
        .env("CLAWDBOT_ENCRYPTION__ENABLED", "true")
        .env("CLAWDBOT_ENCRYPTION__KEY_FILE", &file.0)
        .env("CLAWDBOT_ENCRYPTION__ACTIVE", "k2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("active: no key \"k2\""), "{err}");
}

/// SIGTERM, then everything the process wrote once it exited.
#[test]
fn a_local_model_that_cannot_load_is_refused_naming_the_file() {
    let missing = "/no/such/dir/model.gguf";
    // check-config finds it without loading anything.
    let out = clean_command()
        .arg("check-config")
        .env("MODEL_BACKEND", "local")
        .env("MODEL_PATH", missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing) && err.contains("not found"), "{err}");
    // So does the server, before it answers anything.
    let out = clean_command()
        .env("MODEL_BACKEND", "local")
        .env("MODEL_PATH", missing)
        .env("CLAWDBOT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.backend is local") && err.contains(missing),
        "{err}"
    );
    // With auto it is only a note: the runtime answers without a model.
    let out = clean_command()
        .arg("check-config")
        .env("MODEL_PATH", missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("without a model"));
}

#[tokio::test]
async fn starts_on_embedded_defaults_with_json_logs() {
    let (child, base, _) = spawn_ready(clean_command().stdout(Stdio::piped()), "127.0.0.1").await;
    let (s, b) = post_json(&format!("{base}/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 200);
    assert!(
        b["reply"]
            .as_str()
            .unwrap()
            .contains("No model is configured")
    );
    let out = stop_and_collect(child);
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "bot-runtime ready"));
    assert!(
        lines.iter().any(|l| l["span"]["request_id"].is_string()),
        "request ids are logged"
    );
    // Open on loopback: the usual laptop set-up, nothing to warn about.
    assert!(!logs.contains("no API keys are configured"), "{logs}");
    let _ = std::io::stderr().flush();
}

/// Each thread's nice value (field 19 of /proc/PID/task/TID/stat, after
/// the parenthesised name), by thread name.
#[cfg(target_os = "linux")]
fn thread_nice_values(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // After the name: state is field 3, nice field 19.
        let nice: i64 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((name.trim().to_owned(), nice));
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn no_thread_runs_at_a_lower_priority_than_the_requests() {
    // A request that waits on a background writer (a full log queue, a
    // delivery commit) must not wait behind a niced thread.
    let dir = temp_dir("nice");
    let mut cmd = clean_command();
    cmd.env("CLAWDBOT_SERVER__DATA_DIR", &dir)
        .env("CLAWDBOT_SLACK__ENABLED", "true")
        .env("CLAWDBOT_SLACK__SIGNING_SECRET", "nice-test-signing-secret")
        .env("CLAWDBOT_SLACK__BOT_TOKEN", "xoxb-nice-test")
        .stdout(Stdio::null());
    let (mut child, base, _) = spawn_ready(&mut cmd, "127.0.0.1").await;
    // Some traffic, so lazily started threads exist.
    let (s, _) = post_json(&format!("{base}/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 200);
    let threads = thread_nice_values(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let main = threads[0].1;
    assert!(threads.len() > 2, "{threads:?}");
    for (name, nice) in &threads {
        assert_eq!(
            *nice, main,
            "thread {name} runs at nice {nice}: {threads:?}"
        );
    }
}
