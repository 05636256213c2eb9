//! IM deliveries end to end, in-process: a signed Slack event (the simplest
//! scheme) reaches the model and the reply reaches a local mock of Slack's
//! Web API, once; the queue behind it is checked on SQLite, PostgreSQL,
//! MariaDB and Redis: dedupe, claims, takeover of a dead replica's work,
//! and the drain.

mod common;
mod logdb;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use bot_runtime::deliveries::{
    Binding, Deliveries, DeliveryStore, Recorded, RedisQueue, SqlDeliveries, dedupe_keys,
};
use bot_runtime::im::{Accepted, Inbound, InboundSink, Platform, ReplyTo, slack};
use bot_runtime::support::timefmt::now_ms;
use clawdbot_bench::mock::Behavior;
use clawdbot_config::{RuntimeConfig, Secret};
use serde_json::{Value, json};

use common::{Prefix, client, config_for, mock, redis_url, start};
use logdb::{ENGINES, TestDb, eventually};

const SIGNING_SECRET: &str = "test-signing-secret";
const BOT_TOKEN: &str = "xoxb-test-token";

/// A local stand-in for Slack's Web API: records every chat.postMessage
/// made with the right bot token; refuses other tokens as Slack does. It
/// can be told to fail the next calls with a 500, as an outage would.
#[derive(Clone, Default)]
struct SlackApi {
    posts: Arc<Mutex<Vec<Value>>>,
    calls: Arc<AtomicUsize>,
    failures_left: Arc<AtomicUsize>,
}

impl SlackApi {
    async fn start() -> (Self, String) {
        let api = Self::default();
        let me = api.clone();
        let app = Router::new().route(
            "/api/chat.postMessage",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    me.calls.fetch_add(1, Ordering::SeqCst);
                    let failing = me
                        .failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "outage").into_response();
                    }
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if auth != format!("Bearer {BOT_TOKEN}") {
                        return axum::Json(json!({"ok": false, "error": "invalid_auth"}))
                            .into_response();
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    me.posts.lock().unwrap().push(v);
                    axum::Json(json!({"ok": true, "ts": "1.2"})).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, format!("http://{addr}/api"))
    }

    fn posts(&self) -> Vec<Value> {
        self.posts.lock().unwrap().clone()
    }

    /// chat.postMessage calls received, failed ones included.
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }
}

fn slack_config(cfg: &mut RuntimeConfig, api_base: &str) {
    cfg.slack.enabled = true;
    cfg.slack.signing_secret = Some(Secret::new(SIGNING_SECRET));
    cfg.slack.bot_token = Some(Secret::new(BOT_TOKEN));
    cfg.slack.api_base = api_base.to_owned();
    cfg.channels.reply_attempts = 2;
}

fn event(event_id: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&event_value(event_id, text)).unwrap()
}

fn event_value(event_id: &str, text: &str) -> Value {
    json!({
        "token": "unused",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now_ms() / 1000,
        "event": {
            "type": "app_mention",
            "user": "U123",
            "text": format!("<@UBOT> {text}"),
            "ts": "1700000000.000100",
            "channel": "C42",
            "event_ts": "1700000000.000100"
        }
    })
}

/// Posts `n` signed events, each a message in a thread of its own, so a
/// reply (posted into the thread) names the event it answers; returns the
/// threads, sorted.
async fn post_threaded(url: &str, tag: &str, n: usize) -> Vec<String> {
    let mut threads = Vec::new();
    for i in 0..n {
        let thread = format!("1700000000.{i:06}");
        let mut v = event_value(&format!("Ev{tag}{i}"), &format!("question {i}"));
        v["event"]["thread_ts"] = json!(thread);
        let r = post_signed(url, &serde_json::to_vec(&v).unwrap(), now_ms() / 1000).await;
        assert_eq!(r.status(), 200, "event {i}");
        threads.push(thread);
    }
    threads.sort();
    threads
}

/// The thread of every reply posted, sorted (an event answered twice
/// appears twice).
fn answered_threads(api: &SlackApi) -> Vec<String> {
    let mut t: Vec<String> = api
        .posts()
        .iter()
        .map(|p| p["thread_ts"].as_str().unwrap_or("(none)").to_owned())
        .collect();
    t.sort();
    t
}

async fn post_signed(url: &str, body: &[u8], ts_secs: i64) -> reqwest::Response {
    let ts = ts_secs.to_string();
    client()
        .post(url)
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &ts)
        .header(
            "x-slack-signature",
            slack::signature(SIGNING_SECRET, &ts, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Store {
    /// The default: SQLite (the replica's own deliveries file).
    Sql,
    /// A log database on a server, shared by replicas.
    Shared(logdb::Engine),
    Redis,
}

/// One signed event: acked with 200, answered once with the model's text in
/// the right channel; the redelivery (Slack's retry) is acked, not answered.
#[tokio::test]
async fn a_signed_event_is_answered_once_through_the_platform_api() {
    for store in [Store::Sql, Store::Redis] {
        let model = mock().await;
        let (api, base) = SlackApi::start().await;
        let prefix = Prefix::fresh();
        let rt = start(config_for(Some(&model), |c| {
            slack_config(c, &base);
            if let Store::Redis = store {
                c.redis.url = Some(Secret::new(redis_url()));
                c.redis.key_prefix = prefix.0.clone();
            }
        }))
        .await;
        let url = rt.url("/webhooks/slack");
        let body = event(&format!("Ev{:x}", rand::random::<u64>()), "what is up?");
        let r = post_signed(&url, &body, now_ms() / 1000).await;
        assert_eq!(r.status(), 200, "{store:?}");
        assert!(
            eventually(Duration::from_secs(10), || async { api.posts().len() == 1 }).await,
            "{store:?}: no reply reached the platform"
        );
        let p = &api.posts()[0];
        assert_eq!(p["channel"], "C42", "{p}");
        assert_eq!(p["text"], "Hello from the mock upstream.", "{p}");
        // The model saw the text without the mention.
        let asked = model.last_request().unwrap();
        let last = asked["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["content"], "what is up?", "{asked}");

        // Slack's retry of the same event: acked, never answered again.
        let again = post_signed(&url, &body, now_ms() / 1000).await;
        assert_eq!(again.status(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(api.posts().len(), 1, "{store:?}: answered twice");
        assert_eq!(model.requests(), 1);
        let metrics = rt.metrics_text().await;
        assert!(
            metrics.contains(
                r#"clawdbot_webhook_requests_total{channel="slack",outcome="accepted"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                r#"clawdbot_webhook_requests_total{channel="slack",outcome="duplicate"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"clawdbot_channel_replies_total{channel="slack",outcome="sent"} 1"#)
        );
        rt.stop().await;
    }
}

#[tokio::test]
async fn bad_stale_malformed_and_oversized_deliveries_never_reach_the_model() {
    let model = mock().await;
    let (api, base) = SlackApi::start().await;
    let rt = start(config_for(Some(&model), |c| {
        slack_config(c, &base);
        c.channels.body_limit_bytes = 4096;
    }))
    .await;
    let url = rt.url("/webhooks/slack");
    let body = event("EvBad", "hello");
    let now = now_ms() / 1000;

    let wrong = client()
        .post(&url)
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", "v0=00")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let v: Value = wrong.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_signature", "{v}");

    let unsigned = client().post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);

    let stale = post_signed(&url, &body, now - 301).await;
    assert_eq!(stale.status(), 401);
    assert_eq!(
        stale.json::<Value>().await.unwrap()["error"]["code"],
        "stale"
    );

    let garbage = post_signed(&url, b"{not json", now).await;
    assert_eq!(garbage.status(), 400);

    let huge = vec![b'x'; 5000];
    let big = post_signed(&url, &huge, now).await;
    assert_eq!(big.status(), 413);
    assert!(big.json::<Value>().await.unwrap()["error"]["message"].is_string());

    // A channel that is not enabled is not there.
    let off = client()
        .post(rt.url("/webhooks/feishu"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 404);

    // Draining: refused with 503, so the platform retries at another replica.
    rt.state.drain.start();
    let draining = post_signed(&url, &event("EvLate", "hi"), now).await;
    assert_eq!(draining.status(), 503);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(model.requests(), 0);
    assert!(api.posts().is_empty());
    let metrics = rt.metrics_text().await;
    for outcome in ["bad_signature", "stale", "malformed"] {
        assert!(
            metrics.contains(&format!(
                r#"clawdbot_webhook_requests_total{{channel="slack",outcome="{outcome}"}}"#
            )),
            "{outcome}: {metrics}"
        );
    }
    rt.stop().await;
}

#[tokio::test]
async fn an_im_message_over_the_length_limit_gets_a_refusal_not_the_model() {
    let model = mock().await;
    let (api, base) = SlackApi::start().await;
    let rt = start(config_for(Some(&model), |c| {
        slack_config(c, &base);
        c.sessions.max_message_bytes = 100;
    }))
    .await;
    let url = rt.url("/webhooks/slack");
    let long = "x".repeat(101);
    let r = post_signed(&url, &event("EvLong", &long), now_ms() / 1000).await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), || async { api.posts().len() == 1 }).await,
        "no answer"
    );
    let text = api.posts()[0]["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("too long") && text.contains("100 bytes"),
        "{text}"
    );
    assert_eq!(model.requests(), 0);
    rt.stop().await;
}

fn inbound(id: &str, message_id: Option<&str>) -> Inbound {
    Inbound {
        platform: Platform::Slack,
        delivery_id: id.into(),
        message_id: message_id.map(str::to_owned),
        conversation_id: "C42".into(),
        user_id: "U123".into(),
        text: "hello".into(),
        reply: ReplyTo::Slack {
            channel: "C42".into(),
            thread_ts: None,
        },
    }
}

/// A delivery store on a database of its own (dropped with the `TestDb`).
async fn sql_deliveries(engine: logdb::Engine) -> (TestDb, SqlDeliveries) {
    let db = TestDb::create(engine).await;
    let store = SqlDeliveries::new(
        db.store().await,
        "test".into(),
        &clawdbot_config::ChannelsConfig::default(),
    );
    (db, store)
}

/// The SQL queue's rows on every engine: a key is taken once (aliases
/// too, atomically), a live claim is not taken over, a lapsed one is taken
/// by exactly one replica, and answered keys expire after the TTL.
#[tokio::test]
async fn sql_delivery_rows_dedupe_claim_and_expire_on_every_engine() {
    for engine in ENGINES {
        let (_db, store) = sql_deliveries(engine).await;
        let keys = dedupe_keys(&inbound("E1", Some("M1")));
        assert_eq!(keys, vec!["slack:E1".to_string(), "slack:m:M1".to_string()]);
        let t = 1_000_000;
        // A signature bound to its first message: the same message again
        // is fine, another is not; once expired, it may be bound anew.
        let bind = |m: &'static str, now: i64| {
            let store = store.clone();
            async move {
                store
                    .bind_delivery_key("sig:k", m, now, now + 1000)
                    .await
                    .unwrap()
            }
        };
        assert!(bind("m1", t).await, "{engine:?}");
        assert!(bind("m1", t + 10).await, "{engine:?}");
        assert!(!bind("m2", t + 10).await, "{engine:?}");
        assert!(
            bind("m2", t + 2000).await,
            "{engine:?}: expired binding taken over"
        );
        assert!(!bind("m1", t + 2010).await, "{engine:?}");
        assert!(
            store
                .record_delivery(&keys, "{}", "a", t, t + 60_000, t + 86_400_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_delivery(&keys, "{}", "b", t, t + 60_000, t + 86_400_000)
                .await
                .unwrap()
        );
        // A new delivery id carrying a known message id is a duplicate too,
        // and nothing of it is written.
        let other = dedupe_keys(&inbound("E2", Some("M1")));
        assert!(
            !store
                .record_delivery(&other, "{}", "b", t, t + 60_000, t + 86_400_000)
                .await
                .unwrap(),
            "{engine:?}"
        );
        assert!(
            store
                .record_delivery(
                    &dedupe_keys(&inbound("E2", None)),
                    "{}",
                    "b",
                    t,
                    t + 60_000,
                    t + 86_400_000
                )
                .await
                .unwrap(),
            "{engine:?}: E2 was left behind by the rolled-back insert"
        );
        assert_eq!(store.pending_deliveries().await.unwrap(), 2);

        // Live claims stay with their replica.
        assert!(
            store
                .claim_due_deliveries("c", t + 1, t + 60_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Lapsed: one replica gets each row, the other none.
        let got = store
            .claim_due_deliveries("c", t + 61_000, t + 120_000, 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 2, "{engine:?}");
        assert!(got.iter().all(|r| r.attempts == 2 && r.payload == "{}"));
        assert!(
            store
                .claim_due_deliveries("d", t + 61_000, t + 120_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !store
                .renew_delivery("slack:E1", "a", t + 200_000)
                .await
                .unwrap(),
            "a lost its claim"
        );
        assert!(
            store
                .renew_delivery("slack:E1", "c", t + 200_000)
                .await
                .unwrap()
        );

        store
            .finish_delivery("slack:E1", t + 86_400_000)
            .await
            .unwrap();
        assert_eq!(store.pending_deliveries().await.unwrap(), 1);
        // Still a duplicate after it was answered.
        assert!(
            !store
                .record_delivery(&keys, "{}", "b", t, t, t)
                .await
                .unwrap()
        );
        // Released claims are due at once.
        store.release_delivery("slack:E2", "c").await.unwrap();
        assert_eq!(
            store
                .claim_due_deliveries("d", t + 61_000, t + 120_000, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // Past the TTL the answered key and its alias go, and the expired
        // signature binding; pending rows never do.
        assert_eq!(
            store.prune_deliveries(t + 86_400_001, 1000).await.unwrap(),
            3,
            "{engine:?}"
        );
        assert_eq!(store.pending_deliveries().await.unwrap(), 1);
    }
}

/// A delivery recorded with its signature binding (DingTalk) on every
/// engine: both rows in one step; the platform's retry is a duplicate;
/// the same signature with another message is a replay and writes
/// nothing; an expired binding is taken over.
#[tokio::test]
async fn sql_records_bind_their_signature_on_every_engine() {
    for engine in ENGINES {
        let (_db, store) = sql_deliveries(engine).await;
        let sig = |ttl_ms| {
            Some(Binding {
                key: "sig:k",
                ttl: Duration::from_millis(ttl_ms),
            })
        };
        let first = dedupe_keys(&inbound("E1", None));
        let record = |keys: &[String], ttl_ms| {
            let keys = keys.to_vec();
            let store = store.clone();
            async move { store.record(&keys, "{}", false, sig(ttl_ms)).await.unwrap() }
        };
        assert_eq!(record(&first, 60_000).await, Recorded::New, "{engine:?}");
        assert_eq!(
            record(&first, 60_000).await,
            Recorded::Duplicate,
            "{engine:?}: retry"
        );
        let second = dedupe_keys(&inbound("E2", Some("M2")));
        assert_eq!(
            record(&second, 60_000).await,
            Recorded::Replayed,
            "{engine:?}"
        );
        assert_eq!(
            store.pending().await.unwrap(),
            1,
            "{engine:?}: the replay wrote nothing"
        );
        assert!(
            store
                .record_delivery(&second, "{}", "t", now_ms(), 0, now_ms() + 60_000)
                .await
                .unwrap(),
            "{engine:?}: none of the replay's keys were taken"
        );
        // A short-lived binding, expired: the next message takes it over.
        let third = dedupe_keys(&inbound("E3", None));
        let fourth = dedupe_keys(&inbound("E4", None));
        let short = |keys: &[String]| {
            let keys = keys.to_vec();
            let store = store.clone();
            async move {
                let b = Binding {
                    key: "sig:short",
                    ttl: Duration::from_millis(1),
                };
                store.record(&keys, "{}", false, Some(b)).await.unwrap()
            }
        };
        assert_eq!(short(&third).await, Recorded::New, "{engine:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            short(&fourth).await,
            Recorded::New,
            "{engine:?}: expired binding"
        );
        assert_eq!(store.pending().await.unwrap(), 4, "{engine:?}");
    }
}

#[tokio::test]
async fn redis_queue_dedupes_in_two_steps_and_hands_over_stale_claims() {
    let prefix = Prefix::fresh();
    let mut cfg = RuntimeConfig::default();
    cfg.redis.key_prefix = prefix.0.clone();
    let a = RedisQueue::new(&redis_url(), &cfg.redis, "replica-a".into()).unwrap();
    let b = RedisQueue::new(&redis_url(), &cfg.redis, "replica-b".into()).unwrap();
    a.ensure_group().await.unwrap();
    b.ensure_group().await.unwrap();
    let keys = dedupe_keys(&inbound("E1", Some("M1")));
    let ttl = Duration::from_secs(60);
    assert!(
        a.record(&keys, "one", Duration::from_secs(5), ttl)
            .await
            .unwrap()
    );
    assert!(
        !b.record(&keys, "one", Duration::from_secs(5), ttl)
            .await
            .unwrap()
    );
    assert!(
        !b.record(
            &dedupe_keys(&inbound("E9", Some("M1"))),
            "x",
            Duration::from_secs(5),
            ttl
        )
        .await
        .unwrap()
    );
    assert_eq!(a.len().await.unwrap(), 1);

    // The "done" marker outlives the short "processing" expiry.
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let marker: String = redis::cmd("GET")
        .arg(format!("{}delivery:slack:E1", cfg.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(marker, "done");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}delivery:slack:E1", cfg.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 50_000, "{pttl}");

    // Replica a reads it and dies; b takes it over once it is idle past the lease.
    let read = a.read_new(10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, "one");
    assert!(
        b.claim_stale(Duration::from_millis(300), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = b.claim_stale(Duration::from_millis(300), 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        b.read_new(10).await.unwrap().is_empty(),
        "a stream entry goes to one replica"
    );
    b.finish(&taken[0].key).await.unwrap();
    assert_eq!(b.len().await.unwrap(), 0);
}

/// Dedupe holds between records in flight together on one connection: of
/// 120 concurrent deliveries (40 events, each delivered twice, plus 40 that
/// reuse an earlier event's message id), exactly the 40 first ones are
/// recorded, each once, and a duplicate leaves no marker of its own.
#[tokio::test]
async fn redis_dedupes_concurrent_records() {
    let prefix = Prefix::fresh();
    let mut cfg = RuntimeConfig::default();
    cfg.redis.key_prefix = prefix.0.clone();
    let q = RedisQueue::new(&redis_url(), &cfg.redis, "replica-a".into()).unwrap();
    q.ensure_group().await.unwrap();
    let ttl = Duration::from_secs(60);
    let mut deliveries = Vec::new();
    for i in 0..40 {
        let first = inbound(&format!("E{i}"), Some(&format!("M{i}")));
        deliveries.push((format!("first-{i}"), first.clone()));
        deliveries.push((format!("retry-{i}"), first));
        deliveries.push((
            format!("alias-{i}"),
            inbound(&format!("X{i}"), Some(&format!("M{i}"))),
        ));
    }
    // One task polls them all in order: their pipelines go out back to back.
    let keys: Vec<Vec<String>> = deliveries.iter().map(|(_, m)| dedupe_keys(m)).collect();
    let outcomes = futures_util::future::join_all(
        deliveries
            .iter()
            .zip(&keys)
            .map(|((payload, _), k)| q.record(k, payload, Duration::from_secs(5), ttl)),
    )
    .await;
    let recorded: Vec<&str> = deliveries
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| *o.as_ref().unwrap())
        .map(|((payload, _), _)| payload.as_str())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("first-{i}")).collect();
    assert_eq!(recorded, expected);
    assert_eq!(q.len().await.unwrap(), 40);
    let mut stream: Vec<String> = q
        .read_new(100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.payload)
        .collect();
    stream.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(stream, sorted);

    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in ["E7", "m:M7"] {
        let marker: String = redis::cmd("GET")
            .arg(format!("{}delivery:slack:{key}", cfg.redis.key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(marker, "done", "{key}");
    }
    let stray: Option<String> = redis::cmd("GET")
        .arg(format!("{}delivery:slack:X7", cfg.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stray, None, "a duplicate leaves no marker behind");
}

/// The payloads a store holds, raw: the SQL table's `payload` column or
/// the Redis stream's entries.
async fn raw_payloads(store: &Store, db: Option<&TestDb>, prefix: &Prefix) -> Vec<String> {
    use sqlx::Connection;
    let sql = "SELECT payload FROM channel_deliveries WHERE payload IS NOT NULL";
    match (store, db.map(|d| d.engine)) {
        (Store::Shared(_), Some(logdb::Engine::Postgres)) => {
            let mut c = sqlx::PgConnection::connect(&db.unwrap().url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
        }
        (Store::Shared(_), _) => {
            let mut c = sqlx::MySqlConnection::connect(&db.unwrap().url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
        }
        _ => {
            let client = redis::Client::open(redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(format!("{}deliveries", prefix.0))
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .unwrap();
            entries
                .into_iter()
                .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
                .collect()
        }
    }
}

/// A replica records (acks) a delivery and dies before answering; another
/// replica sharing the store answers it after the lease. Encryption at
/// rest is on: the store holds no message text, and the other replica
/// opens the record with the shared keyring.
#[tokio::test]
async fn a_dead_replicas_delivery_is_answered_by_another() {
    for store in [
        Store::Shared(logdb::Engine::Postgres),
        Store::Shared(logdb::Engine::MySql),
        Store::Redis,
    ] {
        let model = mock().await;
        let (api, base) = SlackApi::start().await;
        let db = match store {
            Store::Shared(engine) => Some(TestDb::create(engine).await),
            _ => None,
        };
        let prefix = Prefix::fresh();
        let setup = |c: &mut RuntimeConfig| {
            slack_config(c, &base);
            c.channels.claim_lease_secs = 5;
            c.encryption.enabled = true;
            c.encryption.keys = Some(Secret::new(
                "k1:sm4-gcm:AAECAwQFBgcICQoLDA0ODw==".to_owned(),
            ));
            c.encryption.active = Some("k1".into());
            match store {
                Store::Sql => {}
                Store::Shared(_) => {
                    c.database.url = Some(Secret::new(db.as_ref().unwrap().url.clone()));
                }
                Store::Redis => {
                    c.redis.url = Some(Secret::new(redis_url()));
                    c.redis.key_prefix = prefix.0.clone();
                }
            }
        };
        // Replica A: records, and for Redis also reads the entry (so it is
        // in A's pending list), then is gone without answering.
        let a_cfg = config_for(Some(&model), setup);
        let a_store =
            bot_runtime::convlog::LogStore::open_lazy(&bot_runtime::convlog::database_url(&a_cfg))
                .unwrap();
        let a = Deliveries::from_config(
            &a_cfg,
            &bot_runtime::telemetry::metrics::Metrics::new(),
            a_store,
            Arc::new(bot_runtime::crypto::Keyring::from_config(&a_cfg.encryption).unwrap()),
        )
        .unwrap();
        let mut message = inbound(&format!("E{:x}", rand::random::<u32>()), None);
        message.text = "my badge number is 4711".into();
        let fresh = a.accept(message).await.unwrap();
        assert_eq!(fresh, Accepted::New);
        let raw = raw_payloads(&store, db.as_ref(), &prefix).await;
        assert_eq!(raw.len(), 1, "{store:?}: {raw:?}");
        assert!(
            !raw[0].contains("4711") && !raw[0].contains("C42") && raw[0].contains("$cb1$k1$"),
            "{store:?}: {}",
            raw[0]
        );
        if let Store::Redis = store {
            let q = RedisQueue::new(&redis_url(), &a_cfg.redis, "replica-a".into()).unwrap();
            q.ensure_group().await.unwrap();
            assert_eq!(q.read_new(10).await.unwrap().len(), 1);
        }
        drop(a);

        let started = std::time::Instant::now();
        let b = start(config_for(Some(&model), setup)).await;
        assert!(
            eventually(Duration::from_secs(20), || async { api.posts().len() == 1 }).await,
            "{store:?}: the dead replica's delivery was never answered"
        );
        // Not before the lease lapsed (the claim was live until then).
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{store:?}: {:?}",
            started.elapsed()
        );
        // Marked answered right after the reply went out.
        assert!(
            eventually(Duration::from_secs(5), || async {
                b.state.deliveries.pending().await.unwrap() == 0
            })
            .await,
            "{store:?}: still pending after the reply"
        );
        b.stop().await;
    }
}

/// SIGTERM's drain: the answer in progress (a slow model) still goes out
/// before the server stops.
#[tokio::test]
async fn the_drain_finishes_answers_in_progress() {
    let model = mock().await;
    model.set_default(Behavior::Slow(Duration::from_millis(1500)));
    let (api, base) = SlackApi::start().await;
    let rt = start(config_for(Some(&model), |c| slack_config(c, &base))).await;
    let url = rt.url("/webhooks/slack");
    let r = post_signed(&url, &event("EvDrain", "slow one"), now_ms() / 1000).await;
    assert_eq!(r.status(), 200);
    assert!(
        model
            .wait_for(|m| m.requests() == 1, Duration::from_secs(5))
            .await
    );
    let state = rt.state.clone();
    let stopping = tokio::spawn(rt.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(state.drain.is_draining());
    stopping.await.unwrap();
    assert_eq!(
        api.posts().len(),
        1,
        "the answer in progress was lost in the drain"
    );
}

/// SIGTERM with the replica's own deliveries file (the default store): no
/// other replica can read that file, so the drain answers every delivery
/// it holds (one in progress, the rest queued), each once, before it stops.
#[tokio::test]
async fn the_drain_answers_the_whole_backlog_of_its_own_file() {
    let model = mock().await;
    model.set_default(Behavior::Slow(Duration::from_millis(250)));
    let (api, base) = SlackApi::start().await;
    let rt = start(config_for(Some(&model), |c| {
        slack_config(c, &base);
        c.channels.workers = 1;
    }))
    .await;
    let threads = post_threaded(&rt.url("/webhooks/slack"), "Backlog", 6).await;
    assert!(
        api.posts().len() < 6,
        "answered before the drain began: nothing left to test"
    );
    rt.stop().await;
    assert_eq!(answered_threads(&api), threads);
}

/// A drain cut short by its deadline leaves the rest in the file; the next
/// start on the same data_dir answers them.
#[tokio::test]
async fn what_the_drain_leaves_in_its_file_is_answered_on_the_next_start() {
    let model = mock().await;
    model.set_default(Behavior::Slow(Duration::from_millis(400)));
    let (api, base) = SlackApi::start().await;
    let data_dir = common::temp_dir("drain-left").display().to_string();
    let setup = |c: &mut RuntimeConfig| {
        slack_config(c, &base);
        c.channels.workers = 1;
        c.channels.claim_lease_secs = 5;
        c.server.drain_deadline_secs = 1;
        c.server.data_dir = data_dir.clone();
    };
    let rt = start(config_for(Some(&model), setup)).await;
    let threads = post_threaded(&rt.url("/webhooks/slack"), "Left", 8).await;
    rt.stop().await;
    let first = api.posts().len();
    assert!(
        first < threads.len(),
        "the 1 s drain answered all {first}: nothing left to test"
    );

    let rt = start(config_for(Some(&model), setup)).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            rt.state.deliveries.pending().await.unwrap() == 0
        })
        .await,
        "left in the file after the restart: {:?}",
        rt.state.deliveries.pending().await
    );
    rt.stop().await;
    let answered = answered_threads(&api);
    let mut distinct = answered.clone();
    distinct.dedup();
    assert_eq!(distinct, threads, "a delivery was lost");
    // The one cut off at the deadline may have sent its reply just before
    // it could be marked answered; nothing else is answered twice.
    assert!(
        answered.len() <= threads.len() + 1,
        "answered twice: {answered:?}"
    );
}

/// A platform API that fails: the reply is retried with backoff; when every
/// try fails it is logged and counted, the delivery is closed (not retried
/// forever) and the server keeps serving.
#[tokio::test]
async fn failed_replies_are_retried_then_counted_never_a_crash() {
    let model = mock().await;
    let (api, base) = SlackApi::start().await;
    let rt = start(config_for(Some(&model), |c| {
        slack_config(c, &base);
        c.channels.reply_attempts = 3;
    }))
    .await;
    let url = rt.url("/webhooks/slack");
    let replies = |outcome: &str| {
        rt.state
            .metrics
            .channel_replies
            .with_label_values(&["slack", outcome])
            .get()
    };

    // Two failures, then the third try goes through: sent once.
    api.fail_next(2);
    let r = post_signed(&url, &event("EvRetry", "retry me"), now_ms() / 1000).await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), || async { api.posts().len() == 1 }).await,
        "never sent after two failures ({} calls)",
        api.calls()
    );
    assert_eq!(api.calls(), 3);
    assert_eq!((replies("sent"), replies("failed")), (1, 0));

    // Down for good: three tries, then counted as failed.
    api.fail_next(usize::MAX);
    let r = post_signed(&url, &event("EvDown", "anyone?"), now_ms() / 1000).await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), || async { replies("failed") == 1 }).await,
        "the failed reply was not counted ({} calls)",
        api.calls()
    );
    assert_eq!(api.calls(), 6);
    assert_eq!(api.posts().len(), 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            rt.state.deliveries.pending().await.unwrap() == 0
        })
        .await,
        "the failed delivery is still pending"
    );
    assert!(
        rt.metrics_text()
            .await
            .contains(r#"clawdbot_channel_replies_total{channel="slack",outcome="failed"} 1"#)
    );
    let health = client().get(rt.url("/health/live")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    rt.stop().await;
}

fn dingtalk_message(msg_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "msgId": msg_id, "conversationId": "cid-1", "conversationType": "1",
        "senderStaffId": "staff-1", "senderId": "user-1", "robotCode": "robot",
        "msgtype": "text", "text": {"content": "hello"},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_dingtalk_signature_is_bound_to_its_first_message() {
    for store in [Store::Sql, Store::Redis] {
        let model = mock().await;
        let prefix = Prefix::fresh();
        let rt = start(config_for(Some(&model), |c| {
            c.dingtalk.enabled = true;
            c.dingtalk.app_key = Some("ding-app".into());
            c.dingtalk.app_secret = Some(Secret::new("ding-app-secret"));
            if let Store::Redis = store {
                c.redis.url = Some(Secret::new(redis_url()));
                c.redis.key_prefix = prefix.0.clone();
            }
        }))
        .await;
        let ts = now_ms();
        let sign = bot_runtime::im::dingtalk::sign("ding-app-secret", ts);
        let post = |body: Vec<u8>| {
            client()
                .post(rt.url("/webhooks/dingtalk"))
                .header("timestamp", ts.to_string())
                .header("sign", sign.clone())
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let first = format!("msg{:x}", rand::random::<u64>());
        assert_eq!(
            post(dingtalk_message(&first)).await.unwrap().status(),
            200,
            "{store:?}"
        );
        // The same headers with another message: a replay with a new body.
        let replay = post(dingtalk_message("msg-forged")).await.unwrap();
        assert_eq!(replay.status(), 401, "{store:?}");
        let v: Value = replay.json().await.unwrap();
        assert_eq!(v["error"]["code"], "replayed", "{v}");
        // DingTalk's own retry of the first message: acknowledged.
        assert_eq!(
            post(dingtalk_message(&first)).await.unwrap().status(),
            200,
            "{store:?}"
        );
        // Answered once, and the forged message never.
        assert!(
            eventually(Duration::from_secs(10), || async { model.requests() == 1 }).await,
            "{store:?}: {} model requests",
            model.requests()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(model.requests(), 1, "{store:?}");
        let metrics = rt.metrics_text().await;
        assert!(
            metrics.contains(
                r#"clawdbot_webhook_requests_total{channel="dingtalk",outcome="replayed"} 1"#
            ),
            "{metrics}"
        );
        rt.stop().await;
    }
}
