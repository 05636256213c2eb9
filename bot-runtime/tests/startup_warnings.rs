//! What the runtime says at start about risky settings: an open API on a
//! shared address, plaintext Feishu webhooks, a CORS wildcard.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

#[tokio::test]
async fn plaintext_feishu_webhooks_start_only_when_allowed_and_then_warn() {
    let feishu = |cmd: &mut Command| {
        cmd.env("CLAWDBOT_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("CLAWDBOT_FEISHU__ENABLED", "true")
            .env("CLAWDBOT_FEISHU__APP_ID", "cli_test")
            .env("CLAWDBOT_FEISHU__APP_SECRET", "feishu-app-secret")
            .env("CLAWDBOT_FEISHU__VERIFICATION_TOKEN", "feishu-token");
    };
    // Not allowed: refused at start, naming the key.
    let mut refused = runtime_command();
    feishu(&mut refused);
    let out = refused
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("feishu.encrypt_key"), "{text}");
    // Allowed: runs, and says what it accepted.
    let mut allowed = runtime_command();
    feishu(&mut allowed);
    allowed
        .env("CLAWDBOT_FEISHU__ALLOW_UNENCRYPTED", "true")
        .stdout(Stdio::piped());
    let (child, _, _) = spawn_ready(&mut allowed, "127.0.0.1").await;
    let out = stop_and_collect(child);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains("feishu.allow_unencrypted")),
        "{logs}"
    );
}

#[tokio::test]
async fn an_open_api_on_a_shared_address_is_named_in_the_log_and_on_health() {
    let (child, base, port) =
        spawn_ready(runtime_command().stdout(Stdio::piped()), "0.0.0.0").await;
    let health: Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["auth"], "open");
    let out = stop_and_collect(child);
    let logs = String::from_utf8_lossy(&out.stdout);
    let warning = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no API keys are configured"))
        })
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["listen"], format!("0.0.0.0:{port}"));
}

#[tokio::test]
async fn a_cors_wildcard_is_warned_about_at_start() {
    let mut cmd = runtime_command();
    cmd.env("CLAWDBOT_SERVER__CORS_ALLOWED_ORIGINS", "*")
        .stdout(Stdio::piped());
    let (child, _, _) = spawn_ready(&mut cmd, "127.0.0.1").await;
    let logs = String::from_utf8_lossy(&stop_and_collect(child).stdout).into_owned();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains("server.cors_allowed_origins")),
        "{logs}"
    );
}
