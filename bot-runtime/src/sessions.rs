//! In-memory session store (the embedded default): conversation history with
//! a window, an idle TTL, and one turn at a time per session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clawdbot_config::SessionsConfig;
use rand::Rng;
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

/// Messages kept per session for `GET .../messages`, beyond the model window.
const KEEP_AT_LEAST: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::timefmt::rfc3339(*t))
}

pub struct Session {
    pub id: String,
    /// The API key name that created it (`None` on an open API).
    pub owner: Option<String>,
    pub user_id: Option<String>,
    turn: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<SessionState>,
}

struct SessionState {
    history: VecDeque<StoredMessage>,
    last_active: Instant,
}

/// Holding this means the session's turn is ours.
pub struct TurnGuard {
    _guard: OwnedMutexGuard<()>,
    pub session: Arc<Session>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    Busy,
    Full,
}

pub struct SessionStore {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    ttl: Duration,
    turn_wait: Duration,
    window: usize,
    keep: usize,
    max_sessions: usize,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last `window` messages, oldest first, for the model.
    pub fn context(&self, window: usize) -> Vec<StoredMessage> {
        let s = self.lock();
        s.history
            .iter()
            .skip(s.history.len().saturating_sub(window))
            .cloned()
            .collect()
    }

    pub fn messages(&self) -> Vec<StoredMessage> {
        self.lock().history.iter().cloned().collect()
    }

    fn is_idle_past(&self, ttl: Duration, now: Instant) -> bool {
        now.duration_since(self.lock().last_active) > ttl
    }

    fn touch(&self) {
        self.lock().last_active = Instant::now();
    }
}

impl SessionStore {
    pub fn new(cfg: &SessionsConfig) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(cfg.ttl_secs),
            turn_wait: Duration::from_secs(cfg.turn_wait_secs),
            window: cfg.history_messages,
            keep: cfg.history_messages.max(KEEP_AT_LEAST),
            max_sessions: cfg.max_sessions,
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A live session, or `NotFound` (unknown or expired).
    pub fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        let map = self.map();
        match map.get(id) {
            Some(s) if !s.is_idle_past(self.ttl, Instant::now()) => Ok(s.clone()),
            _ => Err(SessionError::NotFound),
        }
    }

    pub fn create(
        &self,
        owner: Option<String>,
        user_id: Option<String>,
    ) -> Result<Arc<Session>, SessionError> {
        let mut map = self.map();
        if map.len() >= self.max_sessions {
            return Err(SessionError::Full);
        }
        let id = new_session_id();
        let session = Arc::new(Session {
            id: id.clone(),
            owner,
            user_id,
            turn: Arc::new(tokio::sync::Mutex::new(())),
            state: Mutex::new(SessionState {
                history: VecDeque::new(),
                last_active: Instant::now(),
            }),
        });
        map.insert(id, session.clone());
        Ok(session)
    }

    /// Waits up to `sessions.turn_wait_secs` for the session's previous turn.
    pub async fn begin_turn(&self, session: Arc<Session>) -> Result<TurnGuard, SessionError> {
        let lock = session.turn.clone();
        let guard = tokio::time::timeout(self.turn_wait, lock.lock_owned())
            .await
            .map_err(|_| SessionError::Busy)?;
        session.touch();
        Ok(TurnGuard {
            _guard: guard,
            session,
        })
    }

    /// Records a finished exchange.
    pub fn append(&self, turn: &TurnGuard, user: String, assistant: String) {
        let now = SystemTime::now();
        let mut s = turn.session.lock();
        s.history.push_back(StoredMessage {
            role: Role::User,
            content: user,
            created_at: now,
        });
        s.history.push_back(StoredMessage {
            role: Role::Assistant,
            content: assistant,
            created_at: SystemTime::now(),
        });
        while s.history.len() > self.keep {
            s.history.pop_front();
        }
        s.last_active = Instant::now();
    }

    /// Drops sessions idle longer than the TTL whose turn is not running.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| !s.is_idle_past(self.ttl, now) || s.turn.try_lock().is_err());
        before - map.len()
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

    fn store(ttl: u64, wait: u64) -> SessionStore {
        SessionStore::new(&SessionsConfig {
            history_messages: 4,
            ttl_secs: ttl,
            turn_wait_secs: wait,
            max_sessions: 2,
        })
    }

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let a = new_session_id();
        assert!(is_valid_session_id(&a));
        assert_ne!(a, new_session_id());
        assert!(!is_valid_session_id("ABC"));
        assert!(!is_valid_session_id(&"g".repeat(32)));
    }

    #[tokio::test]
    async fn history_window_and_order() {
        let s = store(60, 1);
        let sess = s.create(None, None).unwrap();
        let t = s.begin_turn(sess.clone()).await.unwrap();
        for i in 0..3 {
            s.append(&t, format!("q{i}"), format!("a{i}"));
        }
        let ctx = sess.context(s.window());
        assert_eq!(
            ctx.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["q1", "a1", "q2", "a2"]
        );
        assert_eq!(sess.messages().len(), 6);
        assert_eq!(sess.messages()[0].role, Role::User);
    }

    #[tokio::test]
    async fn a_second_turn_waits_then_is_busy() {
        let s = store(60, 0);
        let sess = s.create(None, None).unwrap();
        let _t = s.begin_turn(sess.clone()).await.unwrap();
        assert_eq!(
            s.begin_turn(sess.clone()).await.err(),
            Some(SessionError::Busy)
        );
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let s = store(60, 0);
        s.create(None, None).unwrap();
        s.create(None, None).unwrap();
        assert_eq!(s.create(None, None).err(), Some(SessionError::Full));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let s = store(60, 0);
        assert_eq!(s.get(&new_session_id()).err(), Some(SessionError::NotFound));
    }
}
