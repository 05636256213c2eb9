//! The Redis store against the real Redis on 127.0.0.1:6379 (or
//! `CLAWDBOT_TEST_REDIS_URL`; `scripts/ensure-services.sh` starts it). Each
//! test works under its own random key prefix and deletes its keys after.

use std::time::{Duration, Instant};

use clawdbot_config::Scope;
use prometheus::{IntCounterVec, Opts};

use super::*;
use crate::chat::sessions::Role;

fn redis_url() -> String {
    std::env::var("CLAWDBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A store under a fresh prefix; its keys are deleted when this drops.
struct TestStore {
    store: RedisStore,
    prefix: String,
}

impl std::ops::Deref for TestStore {
    type Target = RedisStore;
    fn deref(&self) -> &RedisStore {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Synchronous on purpose: it runs even when the test panicked.
        let Ok(mut c) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

struct Opt {
    ttl_secs: u64,
    turn_wait_secs: u64,
    lock_ttl_ms: u64,
    window: usize,
}

impl Default for Opt {
    fn default() -> Self {
        Self {
            ttl_secs: 60,
            turn_wait_secs: 5,
            lock_ttl_ms: 15_000,
            window: 4,
        }
    }
}

fn store_with(url: &str, o: Opt) -> TestStore {
    let prefix = format!("clawdbot-test:{}:", lock::new_token());
    let redis = RedisConfig {
        url: None,
        key_prefix: prefix.clone(),
        lock_ttl_ms: o.lock_ttl_ms,
        connect_timeout_ms: 300,
        command_timeout_ms: 300,
    };
    let sessions = SessionsConfig {
        history_messages: o.window,
        ttl_secs: o.ttl_secs,
        turn_wait_secs: o.turn_wait_secs,
        max_sessions: 1,
        ..SessionsConfig::default()
    };
    let errors = IntCounterVec::new(Opts::new("e", "e"), &["op"]).unwrap();
    TestStore {
        store: RedisStore::connect(url, &redis, &sessions, errors, Arc::new(Keyring::off()))
            .unwrap(),
        prefix,
    }
}

fn store(o: Opt) -> TestStore {
    store_with(&redis_url(), o)
}

fn key(name: &str, scope: Scope) -> Caller {
    Caller {
        key_name: Some(name.into()),
        scope,
    }
}

/// A new session with `n` exchanges `q{i}`/`a{i}` recorded.
async fn session_with(s: &RedisStore, caller: &Caller, n: usize) -> String {
    let t = s
        .begin_turn(None, caller, Some("user-1".into()))
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/ensure-services.sh starts it)");
    let id = t.session.id.clone();
    t.finish("q0".into(), "a0".into()).await.unwrap();
    for i in 1..n {
        let t = s.begin_turn(Some(&id), caller, None).await.unwrap();
        t.finish(format!("q{i}"), format!("a{i}")).await.unwrap();
    }
    id
}

fn contents(m: &[StoredMessage]) -> Vec<&str> {
    m.iter().map(|m| m.content.as_str()).collect()
}

#[tokio::test]
async fn sessions_keep_owner_user_and_a_windowed_history() {
    let s = store(Opt::default());
    let alice = key("alice", Scope::User);
    let id = session_with(&s, &alice, 3).await;

    let info = s.get(&id).await.unwrap();
    assert_eq!(info.owner.as_deref(), Some("alice"));
    assert_eq!(info.user_id.as_deref(), Some("user-1"));
    assert!(info.created_at <= SystemTime::now());

    let t = s.begin_turn(Some(&id), &alice, None).await.unwrap();
    assert_eq!(contents(&t.history), ["q1", "a1", "q2", "a2"]);
    assert_eq!(t.history[0].role, Role::User);
    drop(t);

    let all = s.messages(&id).await.unwrap();
    assert_eq!(contents(&all), ["q0", "a0", "q1", "a1", "q2", "a2"]);

    assert_eq!(
        s.begin_turn(Some(&id), &key("bob", Scope::User), None)
            .await
            .err(),
        Some(SessionError::NotFound),
        "another user key may not continue it"
    );
    assert!(
        s.begin_turn(Some(&id), &key("root", Scope::Admin), None)
            .await
            .is_ok()
    );
    assert_eq!(
        s.get(&new_session_id()).await.err(),
        Some(SessionError::NotFound)
    );
}

#[tokio::test]
async fn every_key_is_under_the_prefix_and_expires() {
    let s = store(Opt::default());
    let id = session_with(&s, &Caller::anonymous(), 1).await;
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", s.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{}session:{{{id}}}:history", s.prefix),
            format!("{}session:{{{id}}}:meta", s.prefix),
        ],
        "the lock is gone once the turn is recorded"
    );
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 55_000 && ttl <= 60_000, "{k}: {ttl}");
    }
}

#[tokio::test]
async fn idle_sessions_expire() {
    let s = store(Opt {
        ttl_secs: 1,
        ..Opt::default()
    });
    let id = session_with(&s, &Caller::anonymous(), 1).await;
    assert!(s.get(&id).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.get(&id).await.err(), Some(SessionError::NotFound));
    assert_eq!(
        s.begin_turn(Some(&id), &Caller::anonymous(), None)
            .await
            .err(),
        Some(SessionError::NotFound)
    );
}

#[tokio::test]
async fn kept_history_is_trimmed() {
    let s = store(Opt::default());
    let id = session_with(&s, &Caller::anonymous(), 55).await;
    let all = s.messages(&id).await.unwrap();
    assert_eq!(all.len(), KEEP_AT_LEAST);
    assert_eq!(all[0].content, "q5");
    assert_eq!(all.last().unwrap().content, "a54");
}

#[tokio::test]
async fn a_dead_holders_lock_expires() {
    let s = store(Opt {
        turn_wait_secs: 0,
        lock_ttl_ms: 1_000,
        ..Opt::default()
    });
    let anon = Caller::anonymous();
    let id = session_with(&s, &anon, 1).await;
    // A replica that took the lock and died: nobody releases or extends it.
    let mut conn = s.0.conn.clone();
    let lock_key = s.0.keys(&id).lock;
    assert!(
        lock::try_acquire(&mut conn, &lock_key, "dead", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert_eq!(
        s.begin_turn(Some(&id), &anon, None).await.err(),
        Some(SessionError::Busy)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
    assert_eq!(contents(&t.history), ["q0", "a0"]);
    t.finish("q1".into(), "a1".into()).await.unwrap();
}

#[tokio::test]
async fn concurrent_turns_on_one_session_serialize() {
    let s = store(Opt::default());
    let anon = Caller::anonymous();
    let id = session_with(&s, &anon, 1).await;
    let first = s.begin_turn(Some(&id), &anon, None).await.unwrap();
    let started = Instant::now();
    let second = {
        let s = s.store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let t = s
                .begin_turn(Some(&id), &Caller::anonymous(), None)
                .await
                .unwrap();
            (started.elapsed(), contents(&t.history).join(","))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.finish("q1".into(), "a1".into()).await.unwrap();
    let (waited, history) = second.await.unwrap();
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert_eq!(history, "q0,a0,q1,a1", "the second turn sees the first");
}

#[tokio::test]
async fn a_busy_session_answers_busy_without_waiting_when_turn_wait_is_zero() {
    let s = store(Opt {
        turn_wait_secs: 0,
        ..Opt::default()
    });
    let alice = key("alice", Scope::User);
    let id = session_with(&s, &alice, 1).await;
    let t = s.begin_turn(Some(&id), &alice, None).await.unwrap();
    assert_eq!(
        s.begin_turn(Some(&id), &alice, None).await.err(),
        Some(SessionError::Busy)
    );
    assert_eq!(
        s.begin_turn(Some(&id), &key("bob", Scope::User), None)
            .await
            .err(),
        Some(SessionError::NotFound),
        "a busy session does not reveal itself to other keys"
    );
    // A turn that ends without an answer frees the session at once.
    drop(t);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match s.begin_turn(Some(&id), &alice, None).await {
            Ok(_) => break,
            Err(SessionError::Busy) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn a_long_turn_keeps_its_lock() {
    let s = store(Opt {
        turn_wait_secs: 0,
        lock_ttl_ms: 1_000,
        ..Opt::default()
    });
    let anon = Caller::anonymous();
    let id = session_with(&s, &anon, 1).await;
    let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        s.begin_turn(Some(&id), &anon, None).await.err(),
        Some(SessionError::Busy),
        "still held after 2.5 lock ttls"
    );
    t.finish("q1".into(), "a1".into()).await.unwrap();
    assert_eq!(s.messages(&id).await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_turn_whose_lock_was_lost_is_not_recorded() {
    let s = store(Opt::default());
    let anon = Caller::anonymous();
    let id = session_with(&s, &anon, 1).await;
    let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
    let mut conn = s.0.conn.clone();
    let _: () = redis::cmd("SET")
        .arg(s.0.keys(&id).lock)
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        t.finish("q1".into(), "a1".into()).await.err(),
        Some(SessionError::LockLost)
    );
    assert_eq!(s.messages(&id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_turn_takes_at_most_three_round_trips() {
    let s = store(Opt::default());
    let anon = Caller::anonymous();
    // Loads the scripts into Redis (EVALSHA's first miss costs extra trips).
    let id = session_with(&s, &anon, 2).await;

    let before = s.round_trips();
    let t = s.begin_turn(None, &anon, None).await.unwrap();
    t.finish("q".into(), "a".into()).await.unwrap();
    let new_session = s.round_trips() - before;

    let before = s.round_trips();
    let t = s.begin_turn(Some(&id), &anon, None).await.unwrap();
    t.finish("q".into(), "a".into()).await.unwrap();
    let existing = s.round_trips() - before;

    println!("Redis round trips per chat turn: new session {new_session}, existing {existing}");
    assert_eq!(new_session, 2);
    assert_eq!(existing, 3);
}

#[tokio::test]
async fn redis_down_fails_fast_as_unavailable() {
    // Nothing listens on port 1.
    let s = store_with("redis://127.0.0.1:1", Opt::default());
    let started = Instant::now();
    let err = s
        .begin_turn(None, &Caller::anonymous(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SessionError::Unavailable(_)), "{err:?}");
    assert!(matches!(s.ping().await, Err(SessionError::Unavailable(_))));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(s.0.errors.with_label_values(&["create"]).get() >= 1);
}
