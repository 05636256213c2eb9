//! An enabled channel whose credentials Secret lacks a key the runtime
//! requires: Degraded names the key, one Warning says it, and the
//! Deployment is left as it is instead of rolling pods that would refuse to
//! start. Once the key is there, the bot rolls out.

mod common;

use base64::Engine;
use clawdbot_operator::controller::Apis;
use common::fake_api::{APPS, CORE, Run, condition};
use serde_json::{Value, json};

fn secret(keys: &[&str]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!(b64(&format!("value-of-{k}")))))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "feishu-creds", "namespace": "default", "resourceVersion": format!("{}", keys.len())},
        "data": data,
    })
}

fn spec() -> Value {
    json!({"channels": {"feishu": {"enabled": true, "credentialsSecretRef": {"name": "feishu-creds"}}}})
}

#[tokio::test]
async fn a_channel_secret_without_a_required_key_holds_the_rollout() {
    let run = Run::new();
    let path = format!("{CORE}/secrets/feishu-creds");
    run.seed(
        &path,
        secret(&["app_id", "app_secret", "verification_token"]),
    );
    let status = run.reconcile(spec(), Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ChannelCredentialsMissing");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("Secret feishu-creds") && message.contains("has no encrypt_key"),
        "{message}"
    );
    let deployment = format!("{APPS}/deployments/hello");
    assert!(
        !run.wrote("PATCH", &deployment),
        "no pods that cannot start"
    );
    assert_eq!(run.warned("ChannelCredentialsMissing"), 1);
    run.reconcile(spec(), Apis::all(), &[]).await;
    assert_eq!(run.warned("ChannelCredentialsMissing"), 1, "said once");

    // The key added: the bot rolls out.
    run.seed(
        &path,
        secret(&["app_id", "app_secret", "verification_token", "encrypt_key"]),
    );
    let status = run.reconcile(spec(), Apis::all(), &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert!(run.wrote("PATCH", &deployment));
}

#[tokio::test]
async fn plaintext_feishu_is_accepted_when_the_spec_says_so() {
    let run = Run::new();
    run.seed(
        &format!("{CORE}/secrets/feishu-creds"),
        secret(&["app_id", "app_secret", "verification_token"]),
    );
    let mut s = spec();
    s["channels"]["feishu"]["allowUnencrypted"] = json!(true);
    let status = run.reconcile(s, Apis::all(), &[]).await;
    assert_eq!(
        condition(&status, "Degraded")["status"],
        "False",
        "{status}"
    );
    let cm = run.get(&format!("{CORE}/configmaps/hello-config"));
    let config = cm["data"]["config.yaml"].as_str().unwrap();
    assert!(config.contains("allow_unencrypted: true"), "{config}");
}
