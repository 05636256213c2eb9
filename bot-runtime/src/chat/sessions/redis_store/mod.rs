//! Sessions in Redis, shared by every replica behind one Service.
//!
//! Keys, all under `redis.key_prefix`; `{id}` is a hash tag so one session's
//! keys share a cluster slot, as the record script needs:
//! - `<prefix>session:{<id>}:meta`: JSON `{owner, user_id, created_ms}`, idle TTL
//! - `<prefix>session:{<id>}:history`: JSON messages, oldest first, trimmed, idle TTL
//! - `<prefix>session:{<id>}:lock`: the turn lock's token, `redis.lock_ttl_ms`
//!
//! Round trips per turn on the happy path: an existing session takes 3 (take
//! the lock; read meta and history and refresh the TTL; record and unlock), a
//! new one 2 (write meta and take the lock; record and unlock).

mod codec;
mod conn;
mod hold;
mod lock;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clawdbot_config::{RedisConfig, SessionsConfig};
use prometheus::IntCounterVec;
use redis::RedisError;

use super::memory::KEEP_AT_LEAST;
use super::{Hold as TurnHold, SessionError, SessionInfo, StoredMessage, Turn, new_session_id};
use crate::auth::Caller;
use crate::crypto::Keyring;
use conn::Conn;
pub(super) use hold::Hold;

#[derive(Clone)]
pub struct RedisStore(Arc<Shared>);

struct Shared {
    conn: Conn,
    prefix: String,
    idle_ttl: Duration,
    lock_ttl: Duration,
    turn_wait: Duration,
    window: usize,
    keep: usize,
    errors: IntCounterVec,
    /// Seals history text (a no-op with encryption off).
    keyring: Arc<Keyring>,
}

struct Keys {
    meta: String,
    history: String,
    lock: String,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Shared {
    fn keys(&self, id: &str) -> Keys {
        let base = format!("{}session:{{{id}}}", self.prefix);
        Keys {
            meta: format!("{base}:meta"),
            history: format!("{base}:history"),
            lock: format!("{base}:lock"),
        }
    }

    /// Counts and logs a failed request and says what the client gets.
    fn fail(&self, op: &'static str, e: &RedisError) -> SessionError {
        self.errors.with_label_values(&[op]).inc();
        let why = conn::describe(e);
        tracing::warn!(op, error = %why, "Redis request failed");
        SessionError::Unavailable(why)
    }
}

impl RedisStore {
    pub fn connect(
        url: &str,
        redis: &RedisConfig,
        sessions: &SessionsConfig,
        errors: IntCounterVec,
        keyring: Arc<Keyring>,
    ) -> anyhow::Result<Self> {
        Ok(Self(Arc::new(Shared {
            conn: Conn::new(url, redis)?,
            prefix: redis.key_prefix.clone(),
            idle_ttl: Duration::from_secs(sessions.ttl_secs),
            lock_ttl: Duration::from_millis(redis.lock_ttl_ms),
            turn_wait: Duration::from_secs(sessions.turn_wait_secs),
            window: sessions.history_messages,
            keep: sessions.history_messages.max(KEEP_AT_LEAST),
            errors,
            keyring,
        })))
    }

    /// Requests sent to Redis so far by this store (a pipeline or script
    /// call counts once).
    pub fn round_trips(&self) -> u64 {
        self.0.conn.round_trips()
    }

    pub async fn ping(&self) -> Result<(), SessionError> {
        let mut conn = self.0.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.0.fail("ping", &e))
    }

    pub async fn get(&self, id: &str) -> Result<SessionInfo, SessionError> {
        let sh = &self.0;
        let mut conn = sh.conn.clone();
        let meta: Option<String> = redis::cmd("GET")
            .arg(&sh.keys(id).meta)
            .query_async(&mut conn)
            .await
            .map_err(|e| sh.fail("get", &e))?;
        codec::info(id, meta)
    }

    pub async fn messages(&self, id: &str) -> Result<Vec<StoredMessage>, SessionError> {
        let sh = &self.0;
        let keys = sh.keys(id);
        let mut conn = sh.conn.clone();
        let (meta, raw): (Option<String>, Vec<String>) = redis::pipe()
            .cmd("GET")
            .arg(&keys.meta)
            .cmd("LRANGE")
            .arg(&keys.history)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| sh.fail("messages", &e))?;
        codec::info(id, meta)?;
        Ok(codec::messages(&sh.keyring, id, raw))
    }

    pub(super) async fn begin_turn(
        &self,
        id: Option<&str>,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        match id {
            None => self.create(caller, user_id).await,
            Some(id) => self.resume(id, caller, None).await,
        }
    }

    /// A turn on the session with this id, created (owned by `caller`) when
    /// it does not exist: IM conversations derive their session id.
    pub(super) async fn begin_keyed_turn(
        &self,
        id: &str,
        caller: &Caller,
        user_id: Option<String>,
    ) -> Result<Turn, SessionError> {
        let fresh = SessionInfo {
            id: id.to_owned(),
            owner: caller.key_name.clone(),
            user_id,
            created_at: SystemTime::now(),
        };
        self.resume(id, caller, Some(fresh)).await
    }

    /// One round trip: the new session's meta and its lock.
    async fn create(&self, caller: &Caller, user_id: Option<String>) -> Result<Turn, SessionError> {
        let sh = &self.0;
        let id = new_session_id();
        let keys = sh.keys(&id);
        let token = lock::new_token();
        let session = SessionInfo {
            id,
            owner: caller.key_name.clone(),
            user_id,
            created_at: SystemTime::now(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&keys.meta)
            .arg(codec::meta(&session))
            .arg("PX")
            .arg(ms(sh.idle_ttl))
            .ignore();
        lock::add_acquire(&mut pipe, &keys.lock, &token, sh.lock_ttl);
        let mut conn = sh.conn.clone();
        let (locked,): (Option<String>,) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| sh.fail("create", &e))?;
        if locked.is_none() {
            // Only a 128-bit id collision gets here.
            return Err(SessionError::Busy);
        }
        Ok(Turn {
            hold: TurnHold::Redis(Hold::new(sh.clone(), &session.id, token)),
            session,
            history: Vec::new(),
        })
    }

    /// Two round trips when the session is free: take its lock, then read
    /// meta and history and refresh the idle TTL in one pipeline.
    /// With `create`, a missing session is created (one more round trip)
    /// instead of answering `NotFound`.
    async fn resume(
        &self,
        id: &str,
        caller: &Caller,
        create: Option<SessionInfo>,
    ) -> Result<Turn, SessionError> {
        let sh = &self.0;
        let keys = sh.keys(id);
        let token = lock::new_token();
        let mut conn = sh.conn.clone();
        let taken = lock::try_acquire(&mut conn, &keys.lock, &token, sh.lock_ttl)
            .await
            .map_err(|e| sh.fail("lock", &e))?;
        if !taken {
            // Busy. Check access before waiting, so another key's busy
            // session answers 404 like an unknown one.
            match self.get(id).await {
                Ok(info) if !caller.may_access(info.owner.as_deref()) => {
                    return Err(SessionError::NotFound);
                }
                Err(SessionError::NotFound) if create.is_none() => {
                    return Err(SessionError::NotFound);
                }
                Err(e @ SessionError::Unavailable(_)) => return Err(e),
                _ => {}
            }
            self.wait_for_lock(&mut conn, &keys.lock, &token).await?;
        }
        // From here the lock is ours; dropping `hold` on any error frees it.
        let hold = Hold::new(sh.clone(), id, token);
        let start = if sh.window == 0 {
            1 // LRANGE 1 0 is empty: no history goes to the model.
        } else {
            -(sh.window as i64)
        };
        let end = if sh.window == 0 { 0 } else { -1 };
        let (meta, raw): (Option<String>, Vec<String>) = redis::pipe()
            .cmd("GET")
            .arg(&keys.meta)
            .cmd("LRANGE")
            .arg(&keys.history)
            .arg(start)
            .arg(end)
            .cmd("PEXPIRE")
            .arg(&keys.meta)
            .arg(ms(sh.idle_ttl))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&keys.history)
            .arg(ms(sh.idle_ttl))
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| sh.fail("read", &e))?;
        let session = match (meta, create) {
            (None, Some(fresh)) => {
                redis::cmd("SET")
                    .arg(&keys.meta)
                    .arg(codec::meta(&fresh))
                    .arg("PX")
                    .arg(ms(sh.idle_ttl))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| sh.fail("create", &e))?;
                fresh
            }
            (meta, _) => codec::info(id, meta)?,
        };
        if !caller.may_access(session.owner.as_deref()) {
            return Err(SessionError::NotFound);
        }
        Ok(Turn {
            session,
            history: codec::messages(&sh.keyring, id, raw),
            hold: TurnHold::Redis(hold),
        })
    }

    /// Polls with backoff until the lock is ours or `sessions.turn_wait_secs`
    /// has passed (`Busy`).
    async fn wait_for_lock(
        &self,
        conn: &mut Conn,
        key: &str,
        token: &str,
    ) -> Result<(), SessionError> {
        let sh = &self.0;
        let deadline = Instant::now() + sh.turn_wait;
        let mut backoff = lock::Backoff::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SessionError::Busy);
            }
            tokio::time::sleep(backoff.next_delay().min(left)).await;
            if lock::try_acquire(conn, key, token, sh.lock_ttl)
                .await
                .map_err(|e| sh.fail("lock", &e))?
            {
                return Ok(());
            }
        }
    }
}
