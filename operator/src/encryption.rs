//! A bot's encryption keyring Secret, checked with the runtime's own
//! parser (`clawdbot_config::encryption`): a key the runtime would refuse
//! would make every new pod refuse to start, so the operator names it
//! instead and leaves the running pods be.

use crate::crd::ClawdBot;

/// A Secret value read as a keyring: its key ids, or the parser's reason
/// (never key bytes).
pub type Keyring = Result<Vec<String>, String>;

pub fn keyring_of(value: &[u8]) -> Keyring {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8 text".to_owned())?;
    clawdbot_config::encryption::parse_keyring(text)
        .map(|keys| keys.into_iter().map(|k| k.id).collect())
}

/// What is wrong with the keyring `spec.encryption` names, if anything.
/// `keyring_of(secret, key)`: None when the Secret was not read (missing:
/// reported elsewhere), Some(None) when it lacks the key.
pub fn keyring_problem(
    cb: &ClawdBot,
    keyring_of: impl Fn(&str, &str) -> Option<Option<Keyring>>,
) -> Option<String> {
    let e = cb.spec.encryption.as_ref()?;
    let (name, key) = (&e.keys_secret_ref.name, &e.keys_secret_ref.key);
    let at = format!("Secret {name} key {key} (spec.encryption.keysSecretRef)");
    match keyring_of(name, key)? {
        None => Some(format!("{at} is missing: the keyring must be there")),
        Some(Err(why)) => Some(format!("{at}: {why}")),
        Some(Ok(ids)) if !ids.contains(&e.active) => Some(format!(
            "spec.encryption.active: no key {:?} in {at} (it has {})",
            e.active,
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        )),
        Some(Ok(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClawdBotSpec, EncryptionSpec, SecretKeyRef};

    fn bot(active: &str) -> ClawdBot {
        ClawdBot::new(
            "b",
            ClawdBotSpec {
                encryption: Some(EncryptionSpec {
                    keys_secret_ref: SecretKeyRef {
                        name: "keys".into(),
                        key: "keyring".into(),
                    },
                    active: active.into(),
                    digest: None,
                }),
                ..Default::default()
            },
        )
    }

    #[test]
    fn names_the_secret_the_key_and_the_reason() {
        let ids = |v: &[&str]| Some(Some(Ok(v.iter().map(|s| s.to_string()).collect())));
        assert_eq!(keyring_problem(&bot("k2"), |_, _| ids(&["k1", "k2"])), None);
        let p = keyring_problem(&bot("k3"), |_, _| ids(&["k1", "k2"])).unwrap();
        assert!(
            p.contains("no key \"k3\"") && p.contains("it has k1, k2"),
            "{p}"
        );
        let p = keyring_problem(&bot("k1"), |_, _| {
            Some(Some(Err(
                "key \"k1\": sm4-gcm needs a 16-byte key, got 32 bytes".into(),
            )))
        })
        .unwrap();
        assert!(
            p.starts_with("Secret keys key keyring") && p.contains("16-byte"),
            "{p}"
        );
        let p = keyring_problem(&bot("k1"), |_, _| Some(None)).unwrap();
        assert!(p.contains("is missing"), "{p}");
        assert_eq!(
            keyring_problem(&bot("k1"), |_, _| None),
            None,
            "not read yet"
        );
        let plain = ClawdBot::new("b", ClawdBotSpec::default());
        assert_eq!(keyring_problem(&plain, |_, _| unreachable!()), None);
    }
}
