//! `logging.file`: the binary logs to a rotated file instead of stdout (for
//! hosts without journald), and a log file it cannot write stops start-up
//! with a message naming it. Rotation itself: the unit tests of
//! `telemetry::logging`.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn logs_go_to_the_file_as_json_lines_and_not_to_stdout() {
    let dir = temp_dir("logfile");
    let path = dir.join("bot-runtime.log");
    let mut cmd = runtime_command();
    cmd.env("CLAWDBOT_LOGGING__FILE__PATH", &path)
        .env("MODEL_BACKEND", "none")
        .stdout(Stdio::piped());
    let (child, base, _) = spawn_ready(&mut cmd, "127.0.0.1").await;
    let (status, _) = post_json(&format!("{base}/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, 200);
    let out = stop_and_collect(child);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "bot-runtime ready"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["span"]["request_id"].is_string()),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no terminal colours in a file");
}

#[test]
fn a_log_file_in_a_missing_folder_stops_start_up_naming_it() {
    let missing = temp_dir("logfile-missing")
        .join("no-such-dir")
        .join("bot-runtime.log");
    let out = runtime_command()
        .env("CLAWDBOT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("CLAWDBOT_LOGGING__FILE__PATH", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("logging.file.path") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}
