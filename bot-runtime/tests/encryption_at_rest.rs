//! Conversation logs encrypted at rest, on SQLite, PostgreSQL and MariaDB:
//! the raw table and the spill file hold no message text, every row reads
//! back, a key rotation keeps old rows readable, a retired key is named for
//! the rows that need it, a ciphertext moved to another row fails, and rows
//! written before encryption was on still read.

mod common;
mod logdb;

use std::sync::Arc;
use std::time::Duration;

use bot_runtime::convlog::export::{Format, export};
use bot_runtime::convlog::{Exchange, LogStore, LogWriter, Page};
use bot_runtime::crypto::{Keyring, OpenError};
use clawdbot_config::encryption::{Algorithm, KeySpec};
use logdb::{ENGINES, Engine, TestDb, exchange, fast_logs_config, metrics};
use serde_json::{Value, json};
use sqlx::Connection;

const SECRET: &str = "my salary is 12345, 请保密";

fn keys() -> Vec<KeySpec> {
    vec![
        KeySpec {
            id: "2025".into(),
            algorithm: Algorithm::Sm4Gcm,
            key: vec![0x11; 16],
        },
        KeySpec {
            id: "2026".into(),
            algorithm: Algorithm::Aes256Gcm,
            key: vec![0x22; 32],
        },
    ]
}

fn ring(active: Option<&str>) -> Arc<Keyring> {
    Arc::new(Keyring::new(&keys(), active.map(str::to_owned)))
}

fn secret_exchange(n: i64) -> Exchange {
    let mut e = exchange("s-enc", Some("u1"), 1_700_000_000_000 + n);
    e.user_input = format!("{SECRET} #{n}");
    e.bot_response = format!("noted: {SECRET} #{n}");
    e
}

fn writer(url: &str, spill: &std::path::Path, keyring: Arc<Keyring>) -> LogWriter {
    let w = LogWriter::encrypting(
        LogStore::open_lazy(url).unwrap(),
        bot_runtime::convlog::spill::Spill::new(spill.to_path_buf()),
        &fast_logs_config(),
        metrics(),
        keyring,
    );
    w.start();
    w
}

/// A fresh directory under the system's temporary one.
fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cbt-enc-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn write_all(db: &TestDb, keyring: Arc<Keyring>, rows: &[Exchange]) {
    let dir = scratch();
    let w = writer(&db.url, &dir.join("spill.jsonl"), keyring);
    for e in rows {
        w.submit(e.clone()).await;
    }
    assert!(
        w.flush(Duration::from_secs(10)).await,
        "{:?}: written",
        db.engine
    );
    w.drain(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `$body` with `$c` bound to a fresh connection to the test database,
/// whichever engine it is (sqlx has a connection type per engine).
macro_rules! on_db {
    ($db:expr, $c:ident => $body:expr) => {
        match $db.engine {
            Engine::Sqlite => {
                let mut $c = sqlx::SqliteConnection::connect(&$db.url).await.unwrap();
                $body
            }
            Engine::Postgres => {
                let mut $c = sqlx::PgConnection::connect(&$db.url).await.unwrap();
                $body
            }
            Engine::MySql => {
                let mut $c = sqlx::MySqlConnection::connect(&$db.url).await.unwrap();
                $body
            }
        }
    };
}

/// (id, user_input, bot_response) as the database holds them.
async fn raw_rows(db: &TestDb) -> Vec<(String, String, String)> {
    let sql = "SELECT id, user_input, bot_response FROM conversation_logs ORDER BY created_at";
    on_db!(db, c => sqlx::query_as(sql).fetch_all(&mut c).await.unwrap())
}

async fn set_user_input(db: &TestDb, id: &str, value: &str) {
    let sql = if db.engine == Engine::Postgres {
        "UPDATE conversation_logs SET user_input = $1 WHERE id = $2"
    } else {
        "UPDATE conversation_logs SET user_input = ? WHERE id = ?"
    };
    // Each engine has its own result type: keep only the row count.
    let changed = on_db!(db, c => sqlx::query(sql).bind(value).bind(id).execute(&mut c).await.unwrap().rows_affected());
    assert_eq!(changed, 1);
}

async fn read_back(
    db: &TestDb,
    keyring: &Keyring,
) -> Vec<(Exchange, Vec<bot_runtime::convlog::FieldError>)> {
    let store = db.store().await;
    let rows = store
        .page(&Page {
            limit: 100,
            ..Page::default()
        })
        .await
        .unwrap();
    rows.into_iter().map(|r| r.opened(keyring)).collect()
}

/// The history of a rotation: one row from before encryption, three
/// sealed with key 2025, then `new` with 2026. Returns them in that order.
async fn rotated_rows(db: &TestDb, new: i64) -> (Exchange, Vec<Exchange>, Vec<Exchange>) {
    let plain = secret_exchange(0);
    write_all(db, Arc::new(Keyring::off()), std::slice::from_ref(&plain)).await;
    let old: Vec<Exchange> = (1..=3).map(secret_exchange).collect();
    write_all(db, ring(Some("2025")), &old).await;
    let later: Vec<Exchange> = (4..4 + new).map(secret_exchange).collect();
    write_all(db, ring(Some("2026")), &later).await;
    (plain, old, later)
}

#[tokio::test]
async fn stored_text_is_ciphertext_and_reads_back_through_rotation() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let (plain, old, new) = rotated_rows(&db, 2).await;

        let raw = raw_rows(&db).await;
        assert_eq!(raw.len(), 6, "{engine:?}");
        for (i, (_, input, response)) in raw.iter().enumerate().skip(1) {
            assert!(
                !input.contains("salary")
                    && !response.contains("salary")
                    && !input.contains("请保密"),
                "{engine:?}: plaintext in row {i}: {input}"
            );
            let key = if i <= 3 { "2025" } else { "2026" };
            assert_eq!(Keyring::key_of(input), Some(key), "{engine:?}");
        }
        assert!(
            raw[0].1.contains("salary"),
            "the row from before stays as it was"
        );

        // Every row reads back with both keys in the keyring.
        let read = read_back(&db, &ring(Some("2026"))).await;
        let expected: Vec<&Exchange> = std::iter::once(&plain).chain(&old).chain(&new).collect();
        for ((got, errors), want) in read.iter().zip(&expected) {
            assert!(errors.is_empty(), "{engine:?}: {errors:?}");
            assert_eq!(
                (&got.user_input, &got.bot_response),
                (&want.user_input, &want.bot_response)
            );
        }

        // 2025 retired: its rows name the missing key, field by field.
        let only_new = Keyring::new(&keys()[1..], Some("2026".into()));
        let read = read_back(&db, &only_new).await;
        let missing = read.iter().filter(|(_, e)| !e.is_empty()).count();
        assert_eq!(missing, 3, "{engine:?}");
        let (row, errors) = &read[1];
        assert_eq!(row.user_input, "", "never the ciphertext");
        assert_eq!(
            errors[0].error,
            OpenError::MissingKey("2025".into()).to_string()
        );

        // The export counts them and names them per line.
        let mut out = Vec::new();
        let store = db.store().await;
        let done = export(&store, &only_new, 0, i64::MAX, Format::Jsonl, &mut out)
            .await
            .unwrap();
        assert_eq!((done.rows, done.unreadable_fields), (6, 6), "{engine:?}");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1]["field_errors"][0]["field"], "user_input");
        assert!(
            lines[1]["field_errors"][1]["error"]
                .as_str()
                .unwrap()
                .contains("\"2025\"")
        );
        assert!(lines[4].get("field_errors").is_none(), "{}", lines[4]);
        assert_eq!(lines[4]["user_input"], new[0].user_input.as_str());
    }
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_row_fails_for_that_field() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        write_all(
            &db,
            ring(Some("2026")),
            &[secret_exchange(1), secret_exchange(2)],
        )
        .await;
        let raw = raw_rows(&db).await;
        // Row 2's question pasted into row 1: valid ciphertext, wrong row.
        set_user_input(&db, &raw[0].0, &raw[1].1).await;
        let read = read_back(&db, &ring(Some("2026"))).await;
        let (first, errors) = &read[0];
        assert_eq!(errors.len(), 1, "{engine:?}: {errors:?}");
        assert_eq!(
            (errors[0].field, errors[0].error.as_str()),
            ("user_input", OpenError::Tampered.to_string().as_str())
        );
        assert_eq!(first.user_input, "");
        assert!(
            first.bot_response.contains("#1"),
            "the other field still reads"
        );
        assert!(read[1].1.is_empty());
    }
}

#[tokio::test]
async fn the_spill_file_holds_only_ciphertext() {
    // A writer that never takes from its one-slot queue (not started, the
    // database refuses connections): two spill at once, the drain spills
    // the third.
    let dir = scratch();
    let spill = dir.join("spill.jsonl");
    let w = LogWriter::encrypting(
        LogStore::open_lazy("postgres://nobody@127.0.0.1:1/none").unwrap(),
        bot_runtime::convlog::spill::Spill::new(spill.clone()),
        &clawdbot_config::LogsConfig {
            queue_capacity: 1,
            ..fast_logs_config()
        },
        metrics(),
        ring(Some("2025")),
    );
    for n in 0..3 {
        w.submit(secret_exchange(n)).await;
    }
    w.drain(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&spill).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        !text.contains("salary") && !text.contains("请保密"),
        "{text}"
    );
    assert!(text.contains("$cb1$2025$"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Keyring text for the runtime's config, as the environment would give it.
fn keyring_text(ids: &[&str]) -> String {
    use base64::Engine;
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    keys()
        .iter()
        .filter(|k| ids.contains(&k.id.as_str()))
        .map(|k| format!("{}:{}:{}", k.id, k.algorithm.name(), b64(&k.key)))
        .collect::<Vec<_>>()
        .join(",")
}

async fn get(url: &str, key: &str) -> Value {
    let r = common::client()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn every_read_path_decrypts_and_a_retired_key_is_reported_per_field() {
    use clawdbot_config::{ApiKey, Scope, Secret};
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let mock = common::mock().await;
        let with_keys = |ids: &[&str], active: &str| {
            let (url, ring, active) = (db.url.clone(), keyring_text(ids), active.to_owned());
            common::config_for(Some(&mock), move |c| {
                c.auth.api_keys = vec![ApiKey {
                    key: Secret::new("admin-key-0001"),
                    scope: Scope::Admin,
                    name: Some("ops".into()),
                }];
                c.database.url = Some(Secret::new(url));
                c.encryption.enabled = true;
                c.encryption.keys = Some(Secret::new(ring));
                c.encryption.active = Some(active);
            })
        };
        let rt = common::start(with_keys(&["2025"], "2025")).await;
        let r = common::client()
            .post(rt.url("/api/v1/chat"))
            .bearer_auth("admin-key-0001")
            .json(&json!({"message": SECRET, "user_id": "u-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sid = r.json::<Value>().await.unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/api/v1/sessions/{sid}/messages");
        let history = get(&rt.url(&path), "admin-key-0001").await;
        assert_eq!(
            history["messages"][0]["content"], SECRET,
            "{engine:?}: {history}"
        );
        assert!(history.get("field_errors").is_none());
        let list = get(
            &rt.url("/api/v1/conversations?user_id=u-1"),
            "admin-key-0001",
        )
        .await;
        assert_eq!(list["data"][0]["user_input"], SECRET, "{list}");
        rt.stop().await;
        let raw = raw_rows(&db).await;
        assert!(
            raw.iter()
                .all(|(_, i, _)| !i.contains("salary") && i.starts_with("$cb1$2025$")),
            "{raw:?}"
        );

        // Rotated to 2026 with 2025 dropped from the keyring: the old
        // message is reported, field by field, not shown as ciphertext.
        let rt = common::start(with_keys(&["2026"], "2026")).await;
        let history = get(&rt.url(&path), "admin-key-0001").await;
        assert_eq!(history["messages"][0]["content"], "", "{history}");
        let errors = history["field_errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2, "{history}");
        assert!(errors[0]["error"].as_str().unwrap().contains("\"2025\""));
        let list = get(&rt.url("/api/v1/conversations"), "admin-key-0001").await;
        assert_eq!(
            list["data"][0]["field_errors"][0]["field"], "user_input",
            "{list}"
        );
        rt.stop().await;
    }
}

#[tokio::test]
async fn redis_session_history_holds_no_plaintext_and_still_carries_the_conversation() {
    use bot_runtime::chat::sessions::SessionStore;
    use clawdbot_config::Secret;
    let mock = common::mock().await;
    let prefix = common::Prefix::fresh();
    let cfg = common::config_for(Some(&mock), |c| {
        c.redis.url = Some(Secret::new(common::redis_url()));
        c.redis.key_prefix = prefix.0.clone();
        c.encryption.enabled = true;
        c.encryption.keys = Some(Secret::new(keyring_text(&["2025", "2026"])));
        c.encryption.active = Some("2026".into());
    });
    let rt = common::start(cfg.clone()).await;
    let (s, first) = common::post_json(&rt.url("/api/v1/chat"), json!({"message": SECRET})).await;
    assert_eq!(s, 200, "{first}");
    let sid = first["session_id"].as_str().unwrap().to_owned();
    let (s, _) = common::post_json(
        &rt.url("/api/v1/chat"),
        json!({"message": "and again", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 200);
    // The second turn's prompt carried the first question, decrypted.
    let prompt = mock.last_request().unwrap().to_string();
    assert!(prompt.contains("salary"), "{prompt}");
    rt.stop().await;

    // Every key under the prefix, read raw: no message text anywhere.
    let mut c = redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let redis_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", prefix.0))
        .query_async(&mut c)
        .await
        .unwrap();
    let history: Vec<String> = redis::cmd("LRANGE")
        .arg(
            redis_keys
                .iter()
                .find(|k| k.ends_with(":history"))
                .expect("a history key"),
        )
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(history.len(), 4);
    for entry in &history {
        assert!(
            !entry.contains("salary") && !entry.contains("again"),
            "{entry}"
        );
        assert!(entry.contains("$cb1$2026$"), "{entry}");
    }

    // Another replica with the same keyring reads the history back.
    let metrics = bot_runtime::telemetry::metrics::Metrics::new();
    let store = SessionStore::from_config(&cfg, &metrics, ring(Some("2026"))).unwrap();
    let messages = store.messages(&sid).await.unwrap();
    assert_eq!(messages[0].content, SECRET);
    assert_eq!(messages[2].content, "and again");
    assert!(messages.iter().all(|m| m.error.is_none()));
    // One whose keyring lost 2026 says so per message, never shows ciphertext.
    let retired = Arc::new(Keyring::new(&keys()[..1], Some("2025".into())));
    let store = SessionStore::from_config(&cfg, &metrics, retired).unwrap();
    let messages = store.messages(&sid).await.unwrap();
    assert_eq!(messages[0].content, "");
    let why = messages[0].error.as_deref().unwrap();
    assert!(why.contains("\"2026\""), "{why}");
    let json = serde_json::to_value(&messages[0]).unwrap();
    assert_eq!(json["error"], why);
}

#[tokio::test]
async fn rekey_moves_old_rows_to_the_active_key_in_resumable_batches() {
    use bot_runtime::convlog::rekey::{Rekeyed, rekey};
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let (plain, old, _) = rotated_rows(&db, 1).await;
        // Row 3 tampered with: row 2's question pasted in.
        let raw = raw_rows(&db).await;
        set_user_input(&db, &raw[3].0, &raw[2].1).await;

        let store = db.store().await;
        let mut batches = Vec::new();
        let done = rekey(&store, &ring(Some("2026")), "2025", 2, |p| batches.push(p))
            .await
            .unwrap();
        let expected = Rekeyed {
            rewritten: 2,
            unreadable: 1,
        };
        assert_eq!(done, expected, "{engine:?}");
        assert_eq!(batches.len(), 2, "{engine:?}: two batches of two");
        let raw = raw_rows(&db).await;
        let named: Vec<Option<&str>> = raw.iter().map(|(_, i, _)| Keyring::key_of(i)).collect();
        assert_eq!(
            named,
            [None, Some("2026"), Some("2026"), Some("2025"), Some("2026")],
            "{engine:?}"
        );
        assert!(Keyring::key_of(&raw[1].2) == Some("2026"), "both fields");
        // Idempotent: a second run finds only the row it cannot open.
        let again = rekey(&store, &ring(Some("2026")), "2025", 2, |_| {})
            .await
            .unwrap();
        assert_eq!((again.rewritten, again.unreadable), (0, 1));
        // With 2025 gone, everything but the tampered row reads.
        let only_new = Keyring::new(&keys()[1..], Some("2026".into()));
        let read = read_back(&db, &only_new).await;
        let bad: Vec<usize> = (0..read.len()).filter(|&i| !read[i].1.is_empty()).collect();
        assert_eq!(bad, [3], "{engine:?}");
        assert_eq!(read[1].0.user_input, old[0].user_input);
        assert_eq!(read[0].0.user_input, plain.user_input);
    }
}

#[tokio::test]
async fn the_rekey_command_refuses_what_would_lose_data_and_reports_its_work() {
    let db = TestDb::create(Engine::Sqlite).await;
    write_all(&db, ring(Some("2025")), &[secret_exchange(1)]).await;
    let run = |active: &str, ids: &[&str], from: &str| {
        common::runtime_command()
            .args(["rekey", "--from", from])
            .env("DATABASE_URL", &db.url)
            .env("CLAWDBOT_ENCRYPTION__ENABLED", "true")
            .env("CLAWDBOT_ENCRYPTION__KEYS", keyring_text(ids))
            .env("CLAWDBOT_ENCRYPTION__ACTIVE", active)
            .output()
            .unwrap()
    };
    let out = run("2025", &["2025", "2026"], "2025");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the active one"));
    let out = run("2026", &["2026"], "2025");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the keyring"));
    let out = run("2026", &["2025", "2026"], "2025");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("1 row(s) rewritten; no conversation log text names \"2025\""),
        "{err}"
    );
    assert_eq!(Keyring::key_of(&raw_rows(&db).await[0].1), Some("2026"));
}
