//! A session's turn lock in Redis: `SET key token NX PX ttl` with a random
//! token, so only its holder can extend or release it (compare-and-pexpire,
//! compare-and-delete in Lua), and a replica that dies holding it blocks the
//! session for at most the ttl.

use std::sync::LazyLock;
use std::time::Duration;

use rand::Rng;
use redis::{RedisResult, Script};

use super::conn::Conn;

static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         end \
         return 0",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('DEL', KEYS[1]) \
         end \
         return 0",
    )
});

/// 128 random bits: a holder's proof that the lock is still its own.
pub(super) fn new_token() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Adds `SET key token NX PX ttl` to `pipe`; its reply is `OK` when taken.
pub(super) fn add_acquire(pipe: &mut redis::Pipeline, key: &str, token: &str, ttl: Duration) {
    pipe.cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64);
}

/// One attempt; `true` when the lock is now ours.
pub(super) async fn try_acquire(
    conn: &mut Conn,
    key: &str,
    token: &str,
    ttl: Duration,
) -> RedisResult<bool> {
    let mut pipe = redis::pipe();
    add_acquire(&mut pipe, key, token, ttl);
    let (reply,): (Option<String>,) = pipe.query_async(conn).await?;
    Ok(reply.is_some())
}

/// Pushes the lock's expiry out to `ttl` from now; `false` when it is no
/// longer ours (it expired and may have been taken).
pub(super) async fn extend(
    conn: &mut Conn,
    key: &str,
    token: &str,
    ttl: Duration,
) -> RedisResult<bool> {
    let n: i64 = EXTEND
        .key(key)
        .arg(token)
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

pub(super) async fn release(conn: &mut Conn, key: &str, token: &str) -> RedisResult<bool> {
    let n: i64 = RELEASE.key(key).arg(token).invoke_async(conn).await?;
    Ok(n == 1)
}

/// Waits between attempts on a busy lock: 10 ms doubling to 200 ms, with
/// jitter so waiters on several replicas do not poll in step.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(200);

    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        base.mul_f64(rand::rng().random_range(0.5..1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(15));
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(100) && late <= Duration::from_millis(300));
    }

    #[test]
    fn tokens_are_distinct() {
        assert_ne!(new_token(), new_token());
    }
}
