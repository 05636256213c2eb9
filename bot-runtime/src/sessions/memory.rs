//! In-memory session store (the embedded default): conversation history with
//! a window, an idle TTL, and one turn at a time per session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clawdbot_config::SessionsConfig;
use tokio::sync::OwnedMutexGuard;

use super::{
    Hold as TurnHold, Role, SessionError, SessionInfo, StoredMessage, Turn, new_session_id,
};
use crate::auth::Caller;

/// Messages kept per session for `GET .../messages`, beyond the model window.
pub(super) const KEEP_AT_LEAST: usize = 100;

pub struct Session {
    pub id: String,
    /// The API key name that created it (`None` on an open API).
    pub owner: Option<String>,
    pub user_id: Option<String>,
    created_at: SystemTime,
    turn: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<SessionState>,
}

struct SessionState {
    history: VecDeque<StoredMessage>,
    last_active: Instant,
}

/// Holding this means the session's turn is ours.
pub(super) struct Hold {
    _guard: OwnedMutexGuard<()>,
    session: Arc<Session>,
    keep: usize,
}

pub struct MemoryStore {
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

    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            user_id: self.user_id.clone(),
            created_at: self.created_at,
        }
    }

    /// The last `window` messages, oldest first, for the model.
    fn context(&self, window: usize) -> Vec<StoredMessage> {
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

impl Hold {
    /// Records a finished exchange; the turn ends when `self` drops.
    pub(super) fn finish(self, user: String, assistant: String) {
        let now = SystemTime::now();
        let mut s = self.session.lock();
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
}

impl MemoryStore {
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

    fn create(
        &self,
        owner: Option<String>,
        user_id: Option<String>,
    ) -> Result<Arc<Session>, SessionError> {
        self.insert(new_session_id(), owner, user_id)
    }

    /// The live session with this id, or a new one under it.
    fn get_or_create(
        &self,
        id: &str,
        owner: Option<String>,
        user_id: Option<String>,
    ) -> Result<Arc<Session>, SessionError> {
        match self.get(id) {
            Ok(s) => Ok(s),
            Err(_) => self.insert(id.to_owned(), owner, user_id),
        }
    }

    fn insert(
        &self,
        id: String,
        owner: Option<String>,
        user_id: Option<String>,
    ) -> Result<Arc<Session>, SessionError> {
        let mut map = self.map();
        if map.len() >= self.max_sessions && !map.contains_key(&id) {
            return Err(SessionError::Full);
        }
        let session = Arc::new(Session {
            id: id.clone(),
            owner,
            user_id,
            created_at: SystemTime::now(),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            state: Mutex::new(SessionState {
                history: VecDeque::new(),
                last_active: Instant::now(),
            }),
        });
        map.insert(id, session.clone());
        Ok(session)
    }

    /// Access is checked before waiting, so another key's busy session
    /// answers `NotFound` like an unknown one.
    pub(super) async fn begin_turn(
        &self,
        id: Option<&str>,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        let session = match id {
            Some(id) => self.get(id)?,
            None => self.create(caller.key_name.clone(), user_id)?,
        };
        self.lock_turn(session, caller).await
    }

    /// A turn on the session with this id, created (owned by `caller`) when
    /// it does not exist: IM conversations derive their session id.
    pub(super) async fn begin_keyed_turn(
        &self,
        id: &str,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        let session = self.get_or_create(id, caller.key_name.clone(), user_id)?;
        self.lock_turn(session, caller).await
    }

    async fn lock_turn(
        &self,
        session: Arc<Session>,
        caller: &Caller,
    ) -> Result<Turn, SessionError> {
        if !caller.may_access(session.owner.as_deref()) {
            return Err(SessionError::NotFound);
        }
        let lock = session.turn.clone();
        let guard = tokio::time::timeout(self.turn_wait, lock.lock_owned())
            .await
            .map_err(|_| SessionError::Busy)?;
        session.touch();
        Ok(Turn {
            session: session.info(),
            history: session.context(self.window),
            hold: TurnHold::Memory(Hold {
                _guard: guard,
                session,
                keep: self.keep,
            }),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clawdbot_config::Scope;

    fn store(ttl: u64, wait: u64) -> MemoryStore {
        MemoryStore::new(&SessionsConfig {
            history_messages: 4,
            ttl_secs: ttl,
            turn_wait_secs: wait,
            max_sessions: 2,
            ..SessionsConfig::default()
        })
    }

    fn key(name: &str) -> Caller {
        Caller {
            key_name: Some(name.into()),
            scope: Scope::User,
        }
    }

    #[tokio::test]
    async fn history_window_and_order() {
        let s = store(60, 1);
        let anon = Caller::anonymous();
        let id = s.begin_turn(None, &anon, None).await.unwrap().session.id;
        for i in 0..3 {
            let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
            t.finish(format!("q{i}"), format!("a{i}")).await.unwrap();
        }
        let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
        assert_eq!(
            t.history
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            ["q1", "a1", "q2", "a2"]
        );
        let all = s.get(&id).unwrap().messages();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].role, Role::User);
    }

    #[tokio::test]
    async fn a_second_turn_waits_then_is_busy() {
        let s = store(60, 0);
        let anon = Caller::anonymous();
        let t = s.begin_turn(None, &anon, None).await.unwrap();
        let id = t.session.id.clone();
        assert_eq!(
            s.begin_turn(Some(&id), &anon, None).await.err(),
            Some(SessionError::Busy)
        );
        drop(t);
        assert!(s.begin_turn(Some(&id), &anon, None).await.is_ok());
    }

    #[tokio::test]
    async fn other_keys_sessions_are_not_found_even_when_busy() {
        let s = store(60, 0);
        let t = s
            .begin_turn(None, &key("a"), Some("u1".into()))
            .await
            .unwrap();
        assert_eq!(t.session.owner.as_deref(), Some("a"));
        assert_eq!(t.session.user_id.as_deref(), Some("u1"));
        assert_eq!(
            s.begin_turn(Some(&t.session.id), &key("b"), None)
                .await
                .err(),
            Some(SessionError::NotFound)
        );
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let s = store(60, 0);
        let anon = Caller::anonymous();
        s.begin_turn(None, &anon, None).await.unwrap();
        s.begin_turn(None, &anon, None).await.unwrap();
        assert_eq!(
            s.begin_turn(None, &anon, None).await.err(),
            Some(SessionError::Full)
        );
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let s = store(60, 0);
        assert_eq!(s.get(&new_session_id()).err(), Some(SessionError::NotFound));
    }
}
