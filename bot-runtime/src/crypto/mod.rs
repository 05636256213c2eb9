//! Encryption at rest: a keyring of named keys (SM4-GCM or AES-256-GCM,
//! RustCrypto's `sm4` and `aes-gcm`), one of them active for writing.
//!
//! A sealed value is text, so it fits the columns and JSON that held the
//! plaintext: `$cb1$KEY_ID$` and the base64 (URL alphabet, no padding) of
//! the 12-byte random nonce, the ciphertext and the 16-byte tag. The caller
//! passes associated data naming where the value lives (table, field, row
//! id): a ciphertext copied to another row or field fails authentication.
//! Text without the prefix is plaintext written before encryption was on,
//! and reads as it is.

use std::collections::HashMap;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clawdbot_config::encryption::{Algorithm, EncryptionConfig, KeySpec, keyring_of};
use rand::RngCore;

/// SM4 in GCM with the 96-bit nonce of RFC 8998.
type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

/// What every sealed value starts with.
pub const PREFIX: &str = "$cb1$";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a stored value could not be read. Field-level: the caller reports
/// it for that value and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("encrypted with key {0:?}, which is not in the keyring")]
    MissingKey(String),
    #[error("failed authentication (tampered, or moved from another row or field)")]
    Tampered,
    #[error("not a well-formed encrypted value")]
    Malformed,
}

enum Cipher {
    Sm4(Box<Sm4Gcm>),
    Aes(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(spec: &KeySpec) -> Self {
        // The lengths were checked when the keyring was parsed.
        match spec.algorithm {
            Algorithm::Sm4Gcm => Cipher::Sm4(Box::new(
                Sm4Gcm::new_from_slice(&spec.key).expect("16-byte SM4 key"),
            )),
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(
                Aes256Gcm::new_from_slice(&spec.key).expect("32-byte AES key"),
            )),
        }
    }

    fn encrypt(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        // GCM fails only beyond 64 GiB per message.
        match self {
            Cipher::Sm4(c) => c.encrypt(nonce, payload),
            Cipher::Aes(c) => c.encrypt(nonce, payload),
        }
        .expect("GCM encryption of a message under 64 GiB")
    }

    fn decrypt(&self, nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        let payload = Payload { msg: sealed, aad };
        match self {
            Cipher::Sm4(c) => c.decrypt(nonce, payload),
            Cipher::Aes(c) => c.decrypt(nonce, payload),
        }
        .map_err(|_| OpenError::Tampered)
    }
}

pub struct Keyring {
    ciphers: HashMap<String, Cipher>,
    /// None: encryption is off; values are written in plaintext (and
    /// encrypted ones still read, with the keys there are).
    active: Option<String>,
}

impl Keyring {
    /// The keyring `cfg` describes, its key file read from disk. The error
    /// names the key or the setting.
    pub fn from_config(cfg: &EncryptionConfig) -> Result<Self, String> {
        let keys = keyring_of(cfg, |p| std::fs::read_to_string(p))
            .map_err(|e| format!("encryption: {e}"))?;
        Ok(Self::new(
            &keys,
            cfg.enabled.then(|| cfg.active.clone()).flatten(),
        ))
    }

    pub fn new(keys: &[KeySpec], active: Option<String>) -> Self {
        Self {
            ciphers: keys
                .iter()
                .map(|k| (k.id.clone(), Cipher::new(k)))
                .collect(),
            active,
        }
    }

    /// No keys: values are written and read as plaintext.
    pub fn off() -> Self {
        Self::new(&[], None)
    }

    /// Whether the keyring holds key `id`.
    pub fn has(&self, id: &str) -> bool {
        self.ciphers.contains_key(id)
    }

    /// The key new values are sealed with; None when encryption is off.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Whether new values are encrypted.
    pub fn enabled(&self) -> bool {
        self.active.is_some()
    }

    /// `plaintext` as it is to be stored: sealed with the active key and a
    /// random nonce, or unchanged when encryption is off.
    pub fn seal(&self, plaintext: &str, aad: &[u8]) -> String {
        let Some((id, cipher)) = self
            .active
            .as_ref()
            .and_then(|id| self.ciphers.get(id).map(|c| (id, c)))
        else {
            return plaintext.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        envelope(
            id,
            &nonce,
            &cipher.encrypt(&nonce, aad, plaintext.as_bytes()),
        )
    }

    /// A stored value's text: decrypted with the key it names, or as it is
    /// when it was stored in plaintext.
    pub fn open(&self, stored: &str, aad: &[u8]) -> Result<String, OpenError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest.split_once('$').ok_or(OpenError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let cipher = self
            .ciphers
            .get(id)
            .ok_or_else(|| OpenError::MissingKey(id.to_owned()))?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = cipher.decrypt(nonce, aad, sealed)?;
        String::from_utf8(plain).map_err(|_| OpenError::Malformed)
    }

    /// Whether a stored value is sealed (else plaintext, read as it is):
    /// callers that own the text skip `open`, its copy and their
    /// associated data for the common unencrypted case.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// The key id a stored value names; None for plaintext.
    pub fn key_of(stored: &str) -> Option<&str> {
        stored
            .strip_prefix(PREFIX)?
            .split_once('$')
            .map(|(id, _)| id)
    }
}

fn envelope(id: &str, nonce: &[u8; NONCE_LEN], sealed: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(sealed);
    format!("{PREFIX}{id}${}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests;
