//! A turn's hold on its session lock: extended in the background while the
//! answer runs, given up by recording the exchange, or released on drop when
//! the turn ends without one.

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use redis::Script;
use tokio::task::JoinHandle;

use super::super::{Role, SessionError};
use super::{Shared, codec, lock, ms};

/// Appends one exchange, trims to the kept size, refreshes the idle TTL and
/// releases the lock, all only while the lock is still ours: one round trip.
/// KEYS: lock, meta, history. ARGV: token, ttl ms, keep, user, assistant.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
         redis.call('RPUSH', KEYS[3], ARGV[4], ARGV[5]) \
         redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1) \
         redis.call('PEXPIRE', KEYS[3], ARGV[2]) \
         redis.call('PEXPIRE', KEYS[2], ARGV[2]) \
         redis.call('DEL', KEYS[1]) \
         return 1",
    )
});

pub(in crate::chat::sessions) struct Hold {
    shared: Arc<Shared>,
    id: String,
    token: String,
    keepalive: JoinHandle<()>,
    released: bool,
}

impl Hold {
    /// Takes charge of a lock just acquired: extends it every third of its
    /// ttl, so a slow answer keeps it, until the turn ends.
    pub(super) fn new(shared: Arc<Shared>, id: &str, token: String) -> Self {
        let keepalive = tokio::spawn({
            let sh = shared.clone();
            let key = sh.keys(id).lock;
            let token = token.clone();
            async move {
                let mut conn = sh.conn.clone();
                loop {
                    tokio::time::sleep(sh.lock_ttl / 3).await;
                    match lock::extend(&mut conn, &key, &token, sh.lock_ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                "a turn lost its session lock; its answer will not be recorded"
                            );
                            return;
                        }
                        // The lock may still be ours: try again next tick.
                        Err(e) => {
                            sh.fail("extend", &e);
                        }
                    }
                }
            }
        });
        Self {
            shared,
            id: id.to_owned(),
            token,
            keepalive,
            released: false,
        }
    }

    /// Records the exchange and releases the lock in one round trip.
    pub(in crate::chat::sessions) async fn finish(
        mut self,
        user: String,
        assistant: String,
    ) -> Result<(), SessionError> {
        self.keepalive.abort();
        let sh = self.shared.clone();
        let keys = sh.keys(&self.id);
        let now = SystemTime::now();
        let user = codec::entry(&sh.keyring, &self.id, Role::User, user, now);
        let assistant = codec::entry(&sh.keyring, &self.id, Role::Assistant, assistant, now);
        let mut conn = sh.conn.clone();
        let recorded: i64 = RECORD
            .key(&keys.lock)
            .key(&keys.meta)
            .key(&keys.history)
            .arg(&self.token)
            .arg(ms(sh.idle_ttl))
            .arg(sh.keep)
            .arg(user)
            .arg(assistant)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| sh.fail("record", &e))?;
        // Either the script deleted the lock or it was no longer ours.
        self.released = true;
        if recorded == 1 {
            Ok(())
        } else {
            tracing::warn!(
                session_id = %self.id,
                "the turn's session lock expired before its answer was recorded"
            );
            Err(SessionError::LockLost)
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.keepalive.abort();
        if self.released {
            return;
        }
        // The turn ended without an answer (model error, client gone): free
        // the session now rather than when the lock expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let sh = self.shared.clone();
            let key = sh.keys(&self.id).lock;
            let token = std::mem::take(&mut self.token);
            rt.spawn(async move {
                let mut conn = sh.conn.clone();
                if let Err(e) = lock::release(&mut conn, &key, &token).await {
                    sh.fail("unlock", &e);
                }
            });
        }
    }
}
