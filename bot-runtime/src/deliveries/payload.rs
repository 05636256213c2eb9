//! A delivery as stored: its JSON, or with encryption at rest on, that JSON
//! sealed (it holds the user's text, ids and the platform's reply target)
//! inside a small clear envelope naming the delivery's own dedupe key, which
//! is bound as associated data. Records written before encryption was on
//! are plain `Delivery` JSON and still read.

use serde::{Deserialize, Serialize};

use super::Delivery;
use crate::crypto::Keyring;

#[derive(Serialize, Deserialize)]
struct Envelope {
    key: String,
    sealed: String,
}

fn aad(key: &str) -> Vec<u8> {
    format!("im_delivery:{key}").into_bytes()
}

/// The stored form of `delivery`, whose own dedupe key is `key`.
pub fn seal(ring: &Keyring, key: &str, delivery: &Delivery) -> Result<String, String> {
    let json =
        serde_json::to_string(delivery).map_err(|e| format!("cannot encode the delivery: {e}"))?;
    if !ring.enabled() {
        return Ok(json);
    }
    serde_json::to_string(&Envelope {
        key: key.to_owned(),
        sealed: ring.seal(&json, &aad(key)),
    })
    .map_err(|e| format!("cannot encode the delivery: {e}"))
}

/// A stored delivery back; the error says why it cannot be read (not a
/// delivery, its key not in the keyring, tampered).
pub fn open(ring: &Keyring, stored: &str) -> Result<Delivery, String> {
    if let Ok(d) = serde_json::from_str::<Delivery>(stored) {
        return Ok(d);
    }
    let env: Envelope =
        serde_json::from_str(stored).map_err(|e| format!("not a delivery record: {e}"))?;
    let json = ring
        .open(&env.sealed, &aad(&env.key))
        .map_err(|e| format!("delivery {}: {e}", env.key))?;
    serde_json::from_str(&json).map_err(|e| format!("delivery {}: not a delivery: {e}", env.key))
}

#[cfg(test)]
mod tests {
    use clawdbot_config::encryption::{Algorithm, KeySpec};

    use super::*;
    use crate::im::{Inbound, Platform, ReplyTo};

    fn delivery() -> Delivery {
        Delivery {
            inbound: Inbound {
                platform: Platform::Slack,
                delivery_id: "d-1".into(),
                message_id: None,
                conversation_id: "C1".into(),
                user_id: "U1".into(),
                text: "请帮我重置密码".into(),
                reply: ReplyTo::Slack {
                    channel: "C1".into(),
                    thread_ts: None,
                },
            },
            received_ms: 1,
        }
    }

    fn ring() -> Keyring {
        Keyring::new(
            &[KeySpec {
                id: "k".into(),
                algorithm: Algorithm::Aes256Gcm,
                key: vec![4; 32],
            }],
            Some("k".into()),
        )
    }

    #[test]
    fn sealed_records_hide_the_text_and_read_back() {
        let stored = seal(&ring(), "slack:d-1", &delivery()).unwrap();
        assert!(
            !stored.contains("重置密码") && stored.contains("slack:d-1"),
            "{stored}"
        );
        assert_eq!(open(&ring(), &stored).unwrap(), delivery());
        // Under another delivery's key: refused.
        let moved = stored.replace("slack:d-1", "slack:d-2");
        assert!(
            open(&ring(), &moved)
                .unwrap_err()
                .contains("failed authentication")
        );
        // Without the key.
        assert!(
            open(&Keyring::off(), &stored)
                .unwrap_err()
                .contains("not in the keyring")
        );
    }

    #[test]
    fn plain_records_still_read() {
        let plain = seal(&Keyring::off(), "slack:d-1", &delivery()).unwrap();
        assert!(plain.contains("重置密码"));
        assert_eq!(open(&ring(), &plain).unwrap(), delivery());
        assert!(open(&ring(), "{}").is_err());
    }
}
