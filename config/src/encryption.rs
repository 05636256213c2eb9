//! Encryption at rest of conversation data: the keyring's configuration
//! and its parser, shared by `bot-runtime check-config`, start-up and the
//! operator's check of a keyring Secret, so all three refuse the same keys
//! with the same words.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Secret;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Encrypt conversation text before it is stored (logs, spill file,
    /// Redis session history, IM delivery payloads). Off by default: the
    /// embedded default needs no keys.
    pub enabled: bool,
    /// The keyring: entries `ID:ALGORITHM:KEY` separated by commas or
    /// newlines, KEY in standard base64; ALGORITHM `sm4-gcm` (16-byte key)
    /// or `aes-256-gcm` (32-byte key). Set it from the environment
    /// (`CLAWDBOT_ENCRYPTION__KEYS`) or a Kubernetes Secret, never in the
    /// file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Secret>,
    /// A file holding more keyring entries in the same format (a mounted
    /// Secret); read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The id of the key new values are written with; the others only
    /// read. Required when `enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The hash API keys are kept as in memory and compared by: `sha256`,
    /// or `sm3` (GB/T 32905) where the national algorithms are required.
    /// Applies whether or not `enabled` is set.
    pub digest: DigestAlgorithm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    #[default]
    Sha256,
    Sm3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// SM4 (GB/T 32907-2016) in Galois/Counter Mode, as RFC 8998 uses it.
    #[serde(rename = "sm4-gcm")]
    Sm4Gcm,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sm4Gcm => "sm4-gcm",
            Algorithm::Aes256Gcm => "aes-256-gcm",
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Sm4Gcm => 16,
            Algorithm::Aes256Gcm => 32,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sm4-gcm" => Some(Algorithm::Sm4Gcm),
            "aes-256-gcm" => Some(Algorithm::Aes256Gcm),
            _ => None,
        }
    }
}

/// One key of the keyring. `Debug` never prints the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub id: String,
    pub algorithm: Algorithm,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("key", &"***")
            .finish()
    }
}

/// Key ids go into every stored value: short, and no separator characters.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses keyring text. Errors name the key id (or the entry's position
/// when it has none) and never show key bytes.
pub fn parse_keyring(text: &str) -> Result<Vec<KeySpec>, String> {
    let mut keys: Vec<KeySpec> = Vec::new();
    let entries = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'));
    for (n, entry) in entries.enumerate() {
        let mut parts = entry.splitn(3, ':');
        let (Some(id), Some(alg), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("entry {} is not ID:ALGORITHM:BASE64KEY", n + 1));
        };
        let id = id.trim();
        if !valid_id(id) {
            return Err(format!(
                "entry {}: key id {id:?} must be 1-64 letters, digits, '-', '_' or '.'",
                n + 1
            ));
        }
        let algorithm = Algorithm::parse(alg).ok_or_else(|| {
            format!(
                "key {id:?}: unknown algorithm {:?} (sm4-gcm or aes-256-gcm)",
                alg.trim()
            )
        })?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(material.trim())
            .map_err(|_| format!("key {id:?}: the key is not valid base64"))?;
        if key.len() != algorithm.key_len() {
            return Err(format!(
                "key {id:?}: {} needs a {}-byte key, got {} bytes",
                algorithm.name(),
                algorithm.key_len(),
                key.len()
            ));
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("key {id:?} appears twice"));
        }
        keys.push(KeySpec {
            id: id.to_owned(),
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// The whole keyring of a config: `keys` plus the entries of `key_file`
/// (`read` reads it, so this stays pure), checked against `active`.
pub fn keyring_of(
    cfg: &EncryptionConfig,
    read: impl FnOnce(&str) -> std::io::Result<String>,
) -> Result<Vec<KeySpec>, String> {
    let mut keys = match &cfg.keys {
        Some(s) => parse_keyring(s.expose())?,
        None => Vec::new(),
    };
    if let Some(path) = &cfg.key_file {
        let text = read(path).map_err(|e| format!("key_file {path}: {e}"))?;
        for k in parse_keyring(&text).map_err(|e| format!("key_file {path}: {e}"))? {
            if keys.iter().any(|have| have.id == k.id) {
                return Err(format!("key {:?} appears twice", k.id));
            }
            keys.push(k);
        }
    }
    if cfg.enabled {
        let Some(active) = cfg.active.as_deref() else {
            return Err("active: name the key new values are written with".into());
        };
        if !keys.iter().any(|k| k.id == active) {
            return Err(format!("active: no key {active:?} in the keyring"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SM4: &str = "AAECAwQFBgcICQoLDA0ODw=="; // 16 bytes
    const AES: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes

    #[test]
    fn parses_both_algorithms() {
        let keys = parse_keyring(&format!("k1:sm4-gcm:{SM4}, k2:AES-256-GCM:{AES}\n")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].id.as_str(), keys[0].algorithm),
            ("k1", Algorithm::Sm4Gcm)
        );
        assert_eq!(keys[1].key.len(), 32);
        assert!(
            !format!("{keys:?}").contains("AAEC"),
            "no key bytes in Debug"
        );
    }

    #[test]
    fn bad_keys_are_refused_by_name() {
        let err = |t: &str| parse_keyring(t).unwrap_err();
        assert!(
            err(&format!("k9:sm4-gcm:{AES}"))
                .contains("\"k9\": sm4-gcm needs a 16-byte key, got 32")
        );
        assert!(err(&format!("old:des:{SM4}")).contains("\"old\": unknown algorithm \"des\""));
        assert!(err("k1:sm4-gcm:not base64!").contains("\"k1\": the key is not valid base64"));
        assert!(err("justone").contains("entry 1 is not ID:ALGORITHM:BASE64KEY"));
        assert!(err(&format!("a$b:sm4-gcm:{SM4}")).contains("key id"));
        assert!(err(&format!("k:sm4-gcm:{SM4},k:sm4-gcm:{SM4}")).contains("twice"));
        assert!(
            !err(&format!("k9:sm4-gcm:{AES}")).contains(AES),
            "never echoes key bytes"
        );
    }

    #[test]
    fn the_active_key_must_exist_when_enabled() {
        let mut cfg = EncryptionConfig {
            enabled: true,
            keys: Some(Secret::new(format!("k1:sm4-gcm:{SM4}"))),
            ..Default::default()
        };
        let none = |_: &str| -> std::io::Result<String> { unreachable!() };
        assert!(keyring_of(&cfg, none).unwrap_err().contains("active"));
        cfg.active = Some("k2".into());
        assert!(
            keyring_of(&cfg, none)
                .unwrap_err()
                .contains("no key \"k2\"")
        );
        cfg.key_file = Some("/keys".into());
        let keys = keyring_of(&cfg, |_| {
            Ok(format!("# rotated in May\nk2:aes-256-gcm:{AES}\n"))
        })
        .unwrap();
        assert_eq!(keys.len(), 2);
        cfg.enabled = false;
        cfg.active = None;
        cfg.key_file = None;
        assert_eq!(
            keyring_of(&cfg, none).unwrap().len(),
            1,
            "off: no active key needed"
        );
    }
}
