//! Conversation logs: one row per answered exchange, written off the request
//! path in batches (`writer`), spilled to a local file when the database
//! cannot take them (`spill`), read back for the API and exports (`store`),
//! and pruned by age (`retention`).

mod checkpoint;
pub mod export;
pub mod rekey;
pub mod retention;
pub mod spill;
pub mod store;
pub mod writer;

use std::path::PathBuf;

use clawdbot_config::RuntimeConfig;

use crate::crypto::Keyring;
use serde::{Deserialize, Serialize};

pub use store::{LogStore, Page, StoreError};
pub use writer::{LogWriter, WriterMetrics};

/// One answered exchange: what the user sent and what the bot replied.
/// `id` is random and unique, so a retried batch or a replayed spill file
/// never writes the same exchange twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Exchange {
    /// 32 lowercase hex digits (128 random bits).
    pub id: String,
    pub session_id: String,
    pub user_id: Option<String>,
    /// The API key name that made the call (`None` on an open API); the
    /// owner check on `GET /api/v1/sessions/{id}/messages` uses it.
    #[serde(default)]
    #[sqlx(default)]
    pub owner: Option<String>,
    /// `web` (the chat API behind the page) or `openai`.
    pub channel: String,
    pub user_input: String,
    pub bot_response: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    /// Milliseconds since the Unix epoch, UTC.
    pub created_at: i64,
}

/// The text fields that may hold what users wrote (encrypted at rest when
/// `encryption.enabled`); ids, times, counts and names stay clear.
const TEXT_FIELDS: [&str; 2] = ["user_input", "bot_response"];

/// A stored field that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub error: String,
}

impl Exchange {
    fn text_mut(&mut self, field: &str) -> &mut String {
        if field == "user_input" {
            &mut self.user_input
        } else {
            &mut self.bot_response
        }
    }

    /// Associated data of a field's ciphertext: the table, the field and
    /// the exchange id, so a value copied elsewhere fails to open.
    fn aad(&self, field: &str) -> Vec<u8> {
        format!("conversations.{field}:{}", self.id).into_bytes()
    }

    /// The exchange as stored: its text sealed with the keyring's active
    /// key (unchanged when encryption is off).
    pub fn sealed(mut self, ring: &Keyring) -> Self {
        if ring.enabled() {
            for field in TEXT_FIELDS {
                let aad = self.aad(field);
                let text = self.text_mut(field);
                *text = ring.seal(text, &aad);
            }
        }
        self
    }

    /// The exchange as read: text opened with the key each value names
    /// (plaintext rows read as they are). A field that cannot be opened is
    /// left empty and reported, never returned as ciphertext.
    pub fn opened(mut self, ring: &Keyring) -> (Self, Vec<FieldError>) {
        let mut errors = Vec::new();
        for field in TEXT_FIELDS {
            if !Keyring::is_sealed(self.text_mut(field)) {
                continue; // plaintext: read as it is, no copy
            }
            let aad = self.aad(field);
            let text = self.text_mut(field);
            match ring.open(text, &aad) {
                Ok(plain) => *text = plain,
                Err(e) => {
                    text.clear();
                    errors.push(FieldError {
                        field,
                        error: e.to_string(),
                    });
                }
            }
        }
        (self, errors)
    }
}

/// A fresh exchange id: 128 bits from the thread-local CSPRNG, as hex.
pub fn new_exchange_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub fn is_valid_exchange_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `database.url`, or the embedded SQLite file under `server.data_dir`.
pub fn database_url(cfg: &RuntimeConfig) -> String {
    match &cfg.database.url {
        Some(u) => u.expose().to_owned(),
        None => {
            let file = PathBuf::from(&cfg.server.data_dir).join("clawdbot.db");
            format!("sqlite://{}", file.display())
        }
    }
}

/// `logs.spill_file`, or `log-spill.jsonl` under `server.data_dir`.
pub fn spill_path(cfg: &RuntimeConfig) -> PathBuf {
    match &cfg.logs.spill_file {
        Some(f) => PathBuf::from(f),
        None => PathBuf::from(&cfg.server.data_dir).join("log-spill.jsonl"),
    }
}

/// Where a database URL points, safe to log: scheme and host (or the file
/// for SQLite), never the user, password or query.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.split(':').next().unwrap_or_default().to_owned() + ":";
    };
    if scheme == "sqlite" {
        return format!("sqlite://{}", rest.split('?').next().unwrap_or_default());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_scheme_and_host_only() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/logs?sslmode=require"),
            "postgres://db:5432"
        );
        assert_eq!(redact_url("mysql://root@127.0.0.1/x"), "mysql://127.0.0.1");
        assert_eq!(
            redact_url("sqlite://./data/c.db?mode=rwc"),
            "sqlite://./data/c.db"
        );
        assert_eq!(redact_url("postgres:secret"), "postgres:");
    }

    #[test]
    fn ids_are_32_hex_and_distinct() {
        let (a, b) = (new_exchange_id(), new_exchange_id());
        assert!(is_valid_exchange_id(&a) && is_valid_exchange_id(&b) && a != b);
        assert!(!is_valid_exchange_id("ABC"));
    }

    #[test]
    fn default_paths_live_under_the_data_dir() {
        let mut cfg = RuntimeConfig::default();
        cfg.server.data_dir = "/srv/d".into();
        assert_eq!(database_url(&cfg), "sqlite:///srv/d/clawdbot.db");
        assert_eq!(spill_path(&cfg), PathBuf::from("/srv/d/log-spill.jsonl"));
    }
}
