//! Conversation sessions: history with a window, an idle TTL, and one turn at
//! a time per session. Two stores behind one type: in this process's memory
//! (the embedded default) or in Redis (`redis.url`), shared by every replica.

mod memory;
mod redis_store;

use std::sync::Arc;
use std::time::SystemTime;

use clawdbot_config::RuntimeConfig;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::telemetry::metrics::Metrics;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub role: Role,
    pub content: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: SystemTime,
    /// Why `content` is empty: stored encrypted and it could not be opened
    /// (its key is not in the keyring, or it was tampered with).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::support::timefmt::rfc3339(*t))
}

/// What is known about a session besides its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// The API key name that created it (`None` on an open API); callers
    /// check access against it with `Caller::may_access`.
    pub owner: Option<String>,
    pub user_id: Option<String>,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    Busy,
    Full,
    /// The shared store did not answer; the text says how, never where.
    Unavailable(String),
    /// The turn's lock expired before its answer was recorded, so another
    /// turn may have started; recording it now could interleave turns.
    LockLost,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("unknown or expired session"),
            Self::Busy => f.write_str("session busy"),
            Self::Full => f.write_str("session capacity reached"),
            Self::Unavailable(why) => f.write_str(why),
            Self::LockLost => f.write_str("session lock lost"),
        }
    }
}

/// One running turn: the session, the history to send to the model, and the
/// session's turn lock, held until `finish` or drop.
pub struct Turn {
    pub session: SessionInfo,
    /// The last `sessions.history_messages` messages, oldest first.
    pub history: Vec<StoredMessage>,
    hold: Hold,
}

enum Hold {
    Memory(memory::Hold),
    Redis(redis_store::Hold),
}

impl Turn {
    /// Records the finished exchange and ends the turn.
    pub async fn finish(self, user: String, assistant: String) -> Result<(), SessionError> {
        match self.hold {
            Hold::Memory(h) => {
                h.finish(user, assistant);
                Ok(())
            }
            Hold::Redis(h) => h.finish(user, assistant).await,
        }
    }
}

pub enum SessionStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl SessionStore {
    /// Redis when `redis.url` is set, else memory.
    /// `keyring` seals history text in Redis (the in-memory store keeps
    /// plaintext: it is never written anywhere).
    pub fn from_config(
        cfg: &RuntimeConfig,
        metrics: &Metrics,
        keyring: Arc<crate::crypto::Keyring>,
    ) -> anyhow::Result<Self> {
        Ok(match &cfg.redis.url {
            Some(url) => Self::Redis(RedisStore::connect(
                url.expose(),
                &cfg.redis,
                &cfg.sessions,
                metrics.redis_errors.clone(),
                keyring,
            )?),
            None => Self::Memory(MemoryStore::new(&cfg.sessions)),
        })
    }

    /// Starts a turn on session `id` (one `caller` may access), or on a new
    /// session owned by `caller` when `id` is `None`. Waits up to
    /// `sessions.turn_wait_secs` for a running turn, then `Busy`.
    pub async fn begin_turn(
        &self,
        id: Option<&str>,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        match self {
            Self::Memory(s) => s.begin_turn(id, caller, user_id).await,
            Self::Redis(s) => s.begin_turn(id, caller, user_id).await,
        }
    }

    /// A turn on the session with this id, created (owned by `caller`) when
    /// missing or expired. For ids derived from something stable (an IM
    /// platform, conversation and user), never from client input.
    pub async fn begin_keyed_turn(
        &self,
        id: &str,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        match self {
            Self::Memory(s) => s.begin_keyed_turn(id, caller, user_id).await,
            Self::Redis(s) => s.begin_keyed_turn(id, caller, user_id).await,
        }
    }

    /// A live session (`NotFound`: unknown or expired); access is the caller's check.
    pub async fn get(&self, id: &str) -> Result<SessionInfo, SessionError> {
        match self {
            Self::Memory(s) => s.get(id).map(|s| s.info()),
            Self::Redis(s) => s.get(id).await,
        }
    }

    /// Every kept message of a session, oldest first.
    pub async fn messages(&self, id: &str) -> Result<Vec<StoredMessage>, SessionError> {
        match self {
            Self::Memory(s) => s.get(id).map(|s| s.messages()),
            Self::Redis(s) => s.messages(id).await,
        }
    }

    /// Sessions held in memory; `None` with Redis, which this replica does
    /// not count.
    pub fn held_in_memory(&self) -> Option<usize> {
        match self {
            Self::Memory(s) => Some(s.len()),
            Self::Redis(_) => None,
        }
    }

    /// Drops expired in-memory sessions; Redis expires keys by itself.
    pub fn sweep(&self) -> usize {
        match self {
            Self::Memory(s) => s.sweep(),
            Self::Redis(_) => 0,
        }
    }

    /// Readiness: `None` when there is nothing outside the process to check.
    pub async fn check(&self) -> Option<Result<(), SessionError>> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(s) => Some(s.ping().await),
        }
    }
}

/// 128 random bits from the thread's CSPRNG, as 32 hex digits.
pub fn new_session_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Whether a client-sent id has the shape we hand out.
pub fn is_valid_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let a = new_session_id();
        assert!(is_valid_session_id(&a));
        assert_ne!(a, new_session_id());
        assert!(!is_valid_session_id("ABC"));
        assert!(!is_valid_session_id(&"g".repeat(32)));
    }
}
