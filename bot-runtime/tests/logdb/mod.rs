//! Test databases for the conversation log: each test gets its OWN database
//! (random name) on the machine's PostgreSQL and MariaDB, or its own SQLite
//! file, dropped when the guard goes away, so parallel tests and reruns
//! never see each other's rows. Admin URLs: `TEST_PG_ADMIN_URL`,
//! `TEST_MYSQL_ADMIN_URL` (defaults: the local trust/root accounts).
#![allow(dead_code)]

use std::time::Duration;

use bot_runtime::convlog::{Exchange, LogStore, LogWriter, WriterMetrics, new_exchange_id};
use clawdbot_config::LogsConfig;
use prometheus::{IntCounter, IntGauge};
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MySql,
}

pub const ENGINES: [Engine; 3] = [Engine::Sqlite, Engine::Postgres, Engine::MySql];

fn pg_admin() -> String {
    std::env::var("TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn mysql_admin() -> String {
    std::env::var("TEST_MYSQL_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

/// `postgres://user@host:port/NAME` for an admin URL ending in `/db`.
fn with_db(admin: &str, name: &str) -> String {
    let (scheme, rest) = admin.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    format!("{scheme}://{authority}/{name}")
}

pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    name: String,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    pub async fn create(engine: Engine) -> Self {
        let name = format!("cbt_{:016x}", rand::random::<u64>());
        match engine {
            Engine::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                Self {
                    engine,
                    url: format!("sqlite://{}", dir.join("logs.db").display()),
                    name,
                    dir: Some(dir),
                }
            }
            Engine::Postgres => {
                let mut c = sqlx::PgConnection::connect(&pg_admin()).await.unwrap();
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self {
                    engine,
                    url: with_db(&pg_admin(), &name),
                    name,
                    dir: None,
                }
            }
            Engine::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&mysql_admin())
                    .await
                    .unwrap();
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self {
                    engine,
                    url: with_db(&mysql_admin(), &name),
                    name,
                    dir: None,
                }
            }
        }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> LogStore {
        let s = LogStore::open_lazy(&self.url).unwrap();
        s.migrate().await.unwrap();
        s
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        // Drop runs outside async code too (after a panic): use a runtime of
        // its own on a plain thread.
        let (engine, name) = (self.engine, self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match engine {
                    Engine::Postgres => {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&pg_admin()).await {
                            let _ = sqlx::raw_sql(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&mut c)
                            .await;
                        }
                    }
                    Engine::MySql => {
                        if let Ok(mut c) = sqlx::MySqlConnection::connect(&mysql_admin()).await {
                            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                                .execute(&mut c)
                                .await;
                        }
                    }
                    Engine::Sqlite => {}
                }
            });
        })
        .join();
    }
}

pub fn exchange(session: &str, user: Option<&str>, created_at: i64) -> Exchange {
    Exchange {
        id: new_exchange_id(),
        session_id: session.to_owned(),
        user_id: user.map(str::to_owned),
        owner: Some("key-1".into()),
        channel: "web".into(),
        user_input: format!("question, with \"quotes\"\nand a newline {created_at}"),
        bot_response: "answer ✓".into(),
        model: "mock-model".into(),
        prompt_tokens: 3,
        completion_tokens: 5,
        latency_ms: 7,
        created_at,
    }
}

pub fn metrics() -> WriterMetrics {
    WriterMetrics {
        queue_depth: IntGauge::new("q", "q").unwrap(),
        write_failures: IntCounter::new("f", "f").unwrap(),
        spilled: IntCounter::new("s", "s").unwrap(),
    }
}

pub fn fast_logs_config() -> LogsConfig {
    LogsConfig {
        batch_size: 50,
        flush_interval_ms: 20,
        queue_capacity: 1000,
        max_retry_backoff_ms: 200,
        ..LogsConfig::default()
    }
}

/// A started writer on `url`, spilling to `spill`.
pub fn writer(url: &str, spill: &std::path::Path, cfg: &LogsConfig, m: WriterMetrics) -> LogWriter {
    let store = LogStore::open_lazy(url).unwrap();
    let w = LogWriter::new(
        store,
        bot_runtime::convlog::spill::Spill::new(spill.to_path_buf()),
        cfg,
        m,
    );
    w.start();
    w
}

/// Every stored exchange id, in (created_at, id) order, with duplicates kept
/// (there must be none).
pub async fn all_ids(store: &LogStore) -> Vec<String> {
    let mut out = Vec::new();
    let mut page = bot_runtime::convlog::Page {
        limit: 500,
        ..Default::default()
    };
    loop {
        let rows = store.page(&page).await.unwrap();
        out.extend(rows.iter().map(|e| e.id.clone()));
        match rows.last() {
            Some(l) if rows.len() == 500 => page.after = Some((l.created_at, l.id.clone())),
            _ => return out,
        }
    }
}

pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
