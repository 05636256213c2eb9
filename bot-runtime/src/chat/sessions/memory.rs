//! In-memory session store (the embedded default): conversation history with
//! a window, an idle TTL, one turn at a time per session, a count cap
//! (beyond it new sessions get 503) and a byte budget for all history
//! (beyond it the least recently used sessions are forgotten). Expiry,
//! recency and weights are moka's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clawdbot_config::SessionsConfig;
use moka::policy::{EvictionPolicy, Expiry};
use moka::sync::Cache;
use tokio::sync::OwnedMutexGuard;

use super::{
    Hold as TurnHold, Role, SessionError, SessionInfo, StoredMessage, Turn, new_session_id,
};
use crate::auth::Caller;

/// Messages kept per session for `GET .../messages`, beyond the model window.
pub(super) const KEEP_AT_LEAST: usize = 100;

/// What a session costs besides its messages' text (ids, locks, the map
/// entry), and each message besides its content, for the byte budget.
const SESSION_OVERHEAD: usize = 512;
const MESSAGE_OVERHEAD: usize = 64;

pub struct Session {
    pub id: String,
    /// The API key name that created it (`None` on an open API).
    pub owner: Option<String>,
    pub user_id: Option<String>,
    created_at: SystemTime,
    turn: Arc<tokio::sync::Mutex<()>>,
    history: Mutex<VecDeque<StoredMessage>>,
}

/// Holding this means the session's turn is ours.
pub(super) struct Hold {
    _guard: OwnedMutexGuard<()>,
    session: Arc<Session>,
    keep: usize,
    cache: Cache<String, Arc<Session>>,
}

pub struct MemoryStore {
    cache: Cache<String, Arc<Session>>,
    /// Serialises creating sessions, so the count cap is exact.
    creating: Mutex<()>,
    turn_wait: Duration,
    window: usize,
    keep: usize,
    max_sessions: u64,
}

/// An idle TTL that starts again when a session is written (created, or
/// touched by a turn), not when it is only read (listing its messages).
struct IdleTtl(Duration);

impl Expiry<String, Arc<Session>> for IdleTtl {
    fn expire_after_create(&self, _: &String, _: &Arc<Session>, _: Instant) -> Option<Duration> {
        Some(self.0)
    }

    fn expire_after_update(
        &self,
        _: &String,
        _: &Arc<Session>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.0)
    }
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<StoredMessage>> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
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
        let h = self.lock();
        h.iter()
            .skip(h.len().saturating_sub(window))
            .cloned()
            .collect()
    }

    pub fn messages(&self) -> Vec<StoredMessage> {
        self.lock().iter().cloned().collect()
    }

    /// Its weight in the byte budget.
    fn bytes(&self) -> u32 {
        let text: usize = self
            .lock()
            .iter()
            .map(|m| m.content.len() + MESSAGE_OVERHEAD)
            .sum();
        let ids = self.id.len()
            + self.owner.as_ref().map_or(0, String::len)
            + self.user_id.as_ref().map_or(0, String::len);
        u32::try_from(SESSION_OVERHEAD + ids + text).unwrap_or(u32::MAX)
    }
}

impl Hold {
    /// Records a finished exchange; the turn ends when `self` drops. Put
    /// back in the cache, which restarts its TTL and weighs it again.
    pub(super) fn finish(self, user: String, assistant: String) {
        {
            let mut h = self.session.lock();
            h.push_back(StoredMessage {
                role: Role::User,
                content: user,
                created_at: SystemTime::now(),
                error: None,
            });
            h.push_back(StoredMessage {
                role: Role::Assistant,
                content: assistant,
                created_at: SystemTime::now(),
                error: None,
            });
            while h.len() > self.keep {
                h.pop_front();
            }
        }
        self.cache
            .insert(self.session.id.clone(), self.session.clone());
    }
}

impl MemoryStore {
    pub fn new(cfg: &SessionsConfig) -> Self {
        let cache = Cache::builder()
            // Plain LRU: a new session is always admitted (TinyLFU, moka's
            // default, may turn a newcomer away).
            .eviction_policy(EvictionPolicy::lru())
            .max_capacity(cfg.max_memory_bytes)
            .weigher(|_, s: &Arc<Session>| s.bytes())
            .expire_after(IdleTtl(Duration::from_secs(cfg.ttl_secs)))
            .build();
        Self {
            cache,
            creating: Mutex::new(()),
            turn_wait: Duration::from_secs(cfg.turn_wait_secs),
            window: cfg.history_messages,
            keep: cfg.history_messages.max(KEEP_AT_LEAST),
            max_sessions: cfg.max_sessions as u64,
        }
    }

    /// Sessions held (moka's count, exact after [`MemoryStore::sweep`]).
    pub fn len(&self) -> usize {
        usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A live session, or `NotFound` (unknown, expired or evicted).
    pub fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        self.cache.get(id).ok_or(SessionError::NotFound)
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
        let _one_at_a_time = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.cache.get(&id) {
            return Ok(s);
        }
        // Expired and evicted sessions leave the count only once moka has
        // done its pending work.
        self.cache.run_pending_tasks();
        if self.cache.entry_count() >= self.max_sessions {
            return Err(SessionError::Full);
        }
        let session = Arc::new(Session {
            id: id.clone(),
            owner,
            user_id,
            created_at: SystemTime::now(),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            history: Mutex::new(VecDeque::new()),
        });
        self.cache.insert(id, session.clone());
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
        // A turn restarts the idle TTL.
        self.cache.insert(session.id.clone(), session.clone());
        Ok(Turn {
            session: session.info(),
            history: session.context(self.window),
            hold: TurnHold::Memory(Hold {
                _guard: guard,
                session,
                keep: self.keep,
                cache: self.cache.clone(),
            }),
        })
    }

    /// Lets moka drop what expired or went over the budget now; how many
    /// sessions left.
    pub fn sweep(&self) -> usize {
        let before = self.len();
        self.cache.run_pending_tasks();
        before.saturating_sub(self.len())
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

    #[tokio::test]
    async fn the_byte_budget_forgets_the_least_recently_used_sessions() {
        let s = MemoryStore::new(&SessionsConfig {
            max_memory_bytes: 6_000,
            ..SessionsConfig::default()
        });
        let anon = Caller::anonymous();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let turn = s.begin_turn(None, &anon, None).await.unwrap();
            ids.push(turn.session.id.clone());
            // About 2 KB of history each: two fit, three do not.
            turn.finish("q".repeat(1000), "a".repeat(1000))
                .await
                .unwrap();
            s.sweep();
        }
        assert_eq!(
            s.get(&ids[0]).err(),
            Some(SessionError::NotFound),
            "oldest forgotten"
        );
        assert!(s.get(&ids[1]).is_ok() && s.get(&ids[2]).is_ok());
        // Using a session makes it recent: the next one pushes out the other.
        let turn = s.begin_turn(Some(&ids[1]), &anon, None).await.unwrap();
        turn.finish("q".into(), "a".into()).await.unwrap();
        let turn = s.begin_turn(None, &anon, None).await.unwrap();
        turn.finish("q".repeat(1000), "a".repeat(1000))
            .await
            .unwrap();
        s.sweep();
        assert!(s.get(&ids[1]).is_ok(), "recently used, kept");
        assert_eq!(s.get(&ids[2]).err(), Some(SessionError::NotFound));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let s = store(60, 0);
        assert_eq!(s.get(&new_session_id()).err(), Some(SessionError::NotFound));
    }
}
