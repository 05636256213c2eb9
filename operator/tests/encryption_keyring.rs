//! `spec.encryption`: the keyring Secret is checked with the runtime's own
//! parser. A key the runtime would refuse, or an active key the keyring
//! lacks, is Degraded naming it (one Warning), and the Deployment is left
//! as it is instead of rolling pods that would refuse to start. A good
//! keyring rolls out with the keys passed by reference, never copied.

mod common;

use clawdbot_operator::controller::Apis;
use common::fake_api::{APPS, CORE, Run, condition};
use serde_json::{Value, json};

const SM4: &str = "AAECAwQFBgcICQoLDA0ODw=="; // 16 bytes
const AES: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes

fn secret(keyring: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "keys", "namespace": "default", "resourceVersion": rv},
        "stringData": {"keyring": keyring},
    })
}

fn spec(active: &str) -> Value {
    json!({"encryption": {"keysSecretRef": {"name": "keys", "key": "keyring"}, "active": active, "digest": "SM3"}})
}

#[tokio::test]
async fn a_bad_keyring_is_degraded_by_key_id_and_holds_the_rollout() {
    let run = Run::new();
    let path = format!("{CORE}/secrets/keys");
    let deployment = format!("{APPS}/deployments/hello");
    // 32 bytes for SM4.
    run.seed(&path, secret(&format!("k1:sm4-gcm:{AES}"), "1"));
    let status = run.reconcile(spec("k1"), Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True", "{status}");
    assert_eq!(degraded["reason"], "EncryptionKeyringInvalid");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("Secret keys key keyring")
            && message.contains("\"k1\": sm4-gcm needs a 16-byte key"),
        "{message}"
    );
    assert!(!message.contains(AES), "no key bytes in the status");
    assert!(
        !run.wrote("PATCH", &deployment),
        "no pods that cannot start"
    );
    assert_eq!(run.warned("EncryptionKeyringInvalid"), 1);

    // A valid keyring without the active key.
    run.seed(&path, secret(&format!("k1:sm4-gcm:{SM4}"), "2"));
    let status = run.reconcile(spec("k2"), Apis::all(), &[]).await;
    let message = condition(&status, "Degraded")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("spec.encryption.active: no key \"k2\"") && message.contains("it has k1"),
        "{message}"
    );

    // Fixed: the bot rolls out, the keyring passed by reference.
    run.seed(
        &path,
        secret(&format!("k1:sm4-gcm:{SM4}\nk2:aes-256-gcm:{AES}"), "3"),
    );
    let status = run.reconcile(spec("k2"), Apis::all(), &[]).await;
    assert_eq!(
        condition(&status, "Degraded")["status"],
        "False",
        "{status}"
    );
    assert!(run.wrote("PATCH", &deployment));
    let d = run.get(&deployment);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let keys = env
        .iter()
        .find(|e| e["name"] == "CLAWDBOT_ENCRYPTION__KEYS")
        .expect("keyring env");
    assert_eq!(
        keys["valueFrom"]["secretKeyRef"],
        json!({"name": "keys", "key": "keyring", "optional": false})
    );
    let config = run.get(&format!("{CORE}/configmaps/hello-config"));
    let text = config["data"]["config.yaml"].as_str().unwrap();
    assert!(text.contains("active: k2") && !text.contains(SM4), "{text}");
    assert!(text.contains("digest: sm3"), "{text}");
}
