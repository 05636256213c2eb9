//! The conversation log database over sqlx: SQLite, PostgreSQL or
//! MySQL/MariaDB, chosen by the URL's scheme. Queries are plain SQL checked
//! at run time (building never needs a database); migrations are embedded
//! per engine from `bot-runtime/migrations/<engine>/`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, migrate::Migrator};

use super::{Exchange, redact_url};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");

/// Rows per INSERT statement: keeps every engine under its bind limit
/// (SQLite allows 32766 parameters; a row has 11).
const ROWS_PER_STATEMENT: usize = 1000;

pub(crate) const COLUMNS: &str = "id, session_id, user_id, channel, user_input, bot_response, model, \
                       prompt_tokens, completion_tokens, latency_ms, created_at";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite:, postgres:, postgresql:, mysql: or mariadb:")]
    Scheme,
    #[error("database URL is not valid: {0}")]
    Url(String),
    #[error("cannot create the SQLite directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database did not answer in time")]
    Timeout,
    /// A write of a group commit whose transaction failed (the error is
    /// the transaction's, shared by every write in it).
    #[error("write not committed: {0}")]
    Group(String),
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// The same code for each engine: `$p` is the engine's pool (or
/// connection) and `$db` its sqlx database type, so one body serves all
/// three. `$kind` is the enum matched: [`Pool`] or [`Conn`].
macro_rules! per_engine {
    ($kind:ident, $value:expr, $p:ident, $db:ident => $body:expr) => {
        match $value {
            $kind::Sqlite($p) => {
                #[allow(dead_code)]
                type $db = Sqlite;
                $body
            }
            $kind::Postgres($p) => {
                #[allow(dead_code)]
                type $db = Postgres;
                $body
            }
            $kind::MySql($p) => {
                #[allow(dead_code)]
                type $db = MySql;
                $body
            }
        }
    };
}
pub(crate) use per_engine;

/// [`per_engine!`] over a [`Pool`].
macro_rules! on_pool {
    ($pool:expr, $p:ident, $db:ident => $body:expr) => {
        $crate::convlog::store::per_engine!(Pool, $pool, $p, $db => $body)
    };
}
pub(crate) use on_pool;

/// One connection of the store's engine, for statements that must share a
/// connection (a transaction): written once for every engine with
/// [`on_conn!`].
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
    MySql(&'a mut sqlx::MySqlConnection),
}

impl Conn<'_> {
    /// The same connection for one more call.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
            Conn::MySql(c) => Conn::MySql(c),
        }
    }
}

/// [`per_engine!`] over a [`Conn`].
macro_rules! on_conn {
    ($conn:expr, $c:ident, $db:ident => $body:expr) => {
        $crate::convlog::store::per_engine!(Conn, $conn, $c, $db => $body)
    };
}
pub(crate) use on_conn;

/// Filters and position for reading exchanges in (created_at, id) order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub user_id: Option<String>,
    /// Inclusive lower bound, ms since the epoch.
    pub since: Option<i64>,
    /// Exclusive upper bound, ms since the epoch.
    pub until: Option<i64>,
    /// Keyset position: rows strictly after this (created_at, id).
    pub after: Option<(i64, String)>,
    pub limit: u32,
}

#[derive(Clone, Debug)]
pub struct LogStore {
    pool: Pool,
    /// Scheme and host only: safe to log.
    target: String,
    /// Migrations ran (once per process: the log writer and the IM
    /// delivery queue share the store, and must not race on SQLite).
    migrated: Arc<OnceCell<()>>,
}

impl LogStore {
    /// Sets up a pool without connecting (connections open on first use),
    /// so a database that is down at start delays writes instead of
    /// stopping the server. SQLite's directory and file are created.
    pub fn open_lazy(url: &str) -> Result<Self, StoreError> {
        let target = redact_url(url);
        let scheme = url.split(':').next().unwrap_or_default();
        let acquire = Duration::from_secs(3);
        let pool = match scheme {
            "sqlite" => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Url(e.to_string()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // In WAL mode NORMAL fsyncs at checkpoints, not every
                    // commit: a crashed process loses nothing, only a crashed
                    // machine can lose the last commits (and the embedded
                    // SQLite file lives on pod-local scratch anyway).
                    .synchronous(SqliteSynchronous::Normal)
                    // Checkpoints run on a connection of their own, not in
                    // whichever commit fills the WAL (see `checkpoint`).
                    .pragma("wal_autocheckpoint", "0")
                    .busy_timeout(Duration::from_secs(10));
                if let Some(dir) = Path::new(opts.get_filename()).parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Dir(dir.display().to_string(), e))?;
                }
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        // One connection: writers queue here instead of in
                        // SQLite's busy handler, which sleeps 1, 2, 5, 10 ms
                        // between tries; statements on a local file are short.
                        .max_connections(1)
                        // A local file: no connection to go stale, and the
                        // ping would cost a round trip to the connection's
                        // worker thread on every acquire.
                        .test_before_acquire(false)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(opts),
                )
            }
            "postgres" | "postgresql" => {
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Url(scrub(&e.to_string(), url)))?;
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(8)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(opts),
                )
            }
            "mysql" | "mariadb" => {
                let url = format!("mysql:{}", &url[scheme.len() + 1..]);
                let opts = MySqlConnectOptions::from_str(&url)
                    .map_err(|e| StoreError::Url(scrub(&e.to_string(), &url)))?;
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(8)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(opts),
                )
            }
            _ => return Err(StoreError::Scheme),
        };
        Ok(Self {
            pool,
            target,
            migrated: Arc::new(OnceCell::new()),
        })
    }

    /// Whether the database is this process's own SQLite file (no other
    /// replica reads it).
    pub fn is_local(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    /// Scheme and host of the database (no credentials), for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Creates or updates the tables; safe to run on every start and from
    /// several replicas at once (sqlx takes a lock around migrations).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                match &self.pool {
                    Pool::Sqlite(p) => {
                        SQLITE_MIGRATIONS.run(p).await?;
                        super::checkpoint::spawn(p.clone());
                        Ok(())
                    }
                    Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
                    Pool::MySql(p) => MYSQL_MIGRATIONS.run(p).await,
                }
            })
            .await?;
        Ok(())
    }

    /// Whether [`LogStore::migrate`] has succeeded in this process.
    pub fn is_migrated(&self) -> bool {
        self.migrated.initialized()
    }

    /// A real round trip, for readiness and recovery probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.pool, p, _Db => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    /// Writes a batch in one transaction. Exchanges already stored are
    /// skipped (idempotent on the id); sessions are created or their
    /// `last_active` moved forward.
    pub async fn insert_batch(&self, batch: &[Exchange]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let sessions = session_rows(batch);
        on_pool!(&self.pool, p, Db => {
            let mut tx = p.begin().await?;
            for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<Db>::new(format!("INSERT INTO conversation_logs ({COLUMNS}) "));
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.id.clone())
                        .push_bind(e.session_id.clone())
                        .push_bind(e.user_id.clone())
                        .push_bind(e.channel.clone())
                        .push_bind(e.user_input.clone())
                        .push_bind(e.bot_response.clone())
                        .push_bind(e.model.clone())
                        .push_bind(e.prompt_tokens)
                        .push_bind(e.completion_tokens)
                        .push_bind(e.latency_ms)
                        .push_bind(e.created_at);
                });
                qb.push(log_insert_tail(&self.pool));
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in sessions.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO sessions (session_id, user_id, owner, channel, created_at, last_active) ",
                );
                qb.push_values(chunk, |mut b, s| {
                    b.push_bind(s.session_id.clone())
                        .push_bind(s.user_id.clone())
                        .push_bind(s.owner.clone())
                        .push_bind(s.channel.clone())
                        .push_bind(s.created_at)
                        .push_bind(s.last_active);
                });
                qb.push(session_upsert_tail(&self.pool));
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The session's owner (API key name) when the session has logged
    /// exchanges: `None` = unknown session, `Some(None)` = no owner.
    pub async fn session_owner(
        &self,
        session_id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let sql = self.sql("SELECT owner FROM sessions WHERE session_id = ?");
        let row: Option<(Option<String>,)> = on_pool!(&self.pool, p, _Db => {
            sqlx::query_as(&sql).bind(session_id).fetch_optional(p).await?
        });
        Ok(row.map(|r| r.0))
    }

    /// Every exchange of a session, oldest first.
    pub async fn session_exchanges(&self, session_id: &str) -> Result<Vec<Exchange>, StoreError> {
        let sql = self.sql(&format!(
            "SELECT {COLUMNS} FROM conversation_logs \
             WHERE session_id = ? ORDER BY created_at, id"
        ));
        Ok(on_pool!(&self.pool, p, _Db => {
            sqlx::query_as::<_, Exchange>(&sql).bind(session_id).fetch_all(p).await?
        }))
    }

    /// One page in (created_at, id) order, filtered.
    pub async fn page(&self, page: &Page) -> Result<Vec<Exchange>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM conversation_logs WHERE 1 = 1");
        if page.user_id.is_some() {
            sql.push_str(" AND user_id = ?");
        }
        if page.since.is_some() {
            sql.push_str(" AND created_at >= ?");
        }
        if page.until.is_some() {
            sql.push_str(" AND created_at < ?");
        }
        if page.after.is_some() {
            sql.push_str(" AND (created_at > ? OR (created_at = ? AND id > ?))");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?");
        let sql = self.sql(&sql);
        Ok(on_pool!(&self.pool, p, _Db => {
            let mut q = sqlx::query_as::<_, Exchange>(&sql);
            if let Some(u) = &page.user_id {
                q = q.bind(u.as_str());
            }
            if let Some(s) = page.since {
                q = q.bind(s);
            }
            if let Some(u) = page.until {
                q = q.bind(u);
            }
            if let Some((t, id)) = &page.after {
                q = q.bind(*t).bind(*t).bind(id.as_str());
            }
            q.bind(i64::from(page.limit)).fetch_all(p).await?
        }))
    }

    /// Deletes up to `max_rows` exchanges created before `cutoff_ms`, then up
    /// to `max_rows` sessions idle since before it; returns rows deleted.
    /// Small statements keep locks short on a busy database.
    pub async fn prune_once(&self, cutoff_ms: i64, max_rows: u32) -> Result<u64, StoreError> {
        let limit = i64::from(max_rows);
        let (logs, sessions) = match &self.pool {
            // MySQL cannot LIMIT a subquery under IN, but takes DELETE ... LIMIT.
            Pool::MySql(_) => (
                "DELETE FROM conversation_logs WHERE created_at < ? ORDER BY created_at LIMIT ?",
                "DELETE FROM sessions WHERE last_active < ? ORDER BY last_active LIMIT ?",
            ),
            _ => (
                "DELETE FROM conversation_logs WHERE id IN (SELECT id FROM conversation_logs \
                 WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions \
                 WHERE last_active < ? ORDER BY last_active LIMIT ?)",
            ),
        };
        let (logs, sessions) = (self.sql(logs), self.sql(sessions));
        Ok(on_pool!(&self.pool, p, _Db => {
            let a = sqlx::query(&logs).bind(cutoff_ms).bind(limit).execute(p).await?.rows_affected();
            let b = sqlx::query(&sessions).bind(cutoff_ms).bind(limit).execute(p).await?.rows_affected();
            a + b
        }))
    }

    /// The pool, for the delivery store that shares it.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `?` placeholders as the engine wants them (`$1`, `$2`, ... on PostgreSQL).
    pub(crate) fn sql(&self, text: &str) -> String {
        if !matches!(self.pool, Pool::Postgres(_)) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Closes the pool's connections (at shutdown).
    pub async fn close(&self) {
        on_pool!(&self.pool, p, _Db => p.close().await);
    }
}

fn log_insert_tail(pool: &Pool) -> &'static str {
    match pool {
        // Only a duplicate id is a no-op; INSERT IGNORE would also hide
        // truncation and other data errors.
        Pool::MySql(_) => " ON DUPLICATE KEY UPDATE id = id",
        _ => " ON CONFLICT (id) DO NOTHING",
    }
}

fn session_upsert_tail(pool: &Pool) -> &'static str {
    match pool {
        Pool::MySql(_) => {
            " ON DUPLICATE KEY UPDATE last_active = GREATEST(last_active, VALUES(last_active))"
        }
        Pool::Postgres(_) => {
            " ON CONFLICT (session_id) DO UPDATE SET last_active = GREATEST(sessions.last_active, EXCLUDED.last_active)"
        }
        Pool::Sqlite(_) => {
            " ON CONFLICT (session_id) DO UPDATE SET last_active = MAX(sessions.last_active, excluded.last_active)"
        }
    }
}

struct SessionRow {
    session_id: String,
    user_id: Option<String>,
    owner: Option<String>,
    channel: String,
    created_at: i64,
    last_active: i64,
}

/// One row per session in the batch (an upsert may touch a row only once
/// per statement), sorted by id so concurrent writers lock in one order.
/// Session rows for the batch. A stateless exchange (an OpenAI-compatible
/// call, whose session id is its own id) has no session to record.
fn session_rows(batch: &[Exchange]) -> Vec<SessionRow> {
    let mut by_id: std::collections::BTreeMap<&str, SessionRow> = Default::default();
    for e in batch.iter().filter(|e| e.session_id != e.id) {
        by_id
            .entry(&e.session_id)
            .and_modify(|s| {
                s.created_at = s.created_at.min(e.created_at);
                s.last_active = s.last_active.max(e.created_at);
            })
            .or_insert_with(|| SessionRow {
                session_id: e.session_id.clone(),
                user_id: e.user_id.clone(),
                owner: e.owner.clone(),
                channel: e.channel.clone(),
                created_at: e.created_at,
                last_active: e.created_at,
            });
    }
    by_id.into_values().collect()
}

/// sqlx's URL errors may quote the URL; never let a password through.
fn scrub(msg: &str, url: &str) -> String {
    if msg.contains(url) {
        msg.replace(url, &redact_url(url))
    } else {
        msg.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sqlx pools need a runtime even when lazy.
    #[tokio::test]
    async fn placeholders_follow_the_engine() {
        let pg = LogStore::open_lazy("postgres://u@127.0.0.1:1/x").unwrap();
        assert_eq!(pg.sql("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(pg.target(), "postgres://127.0.0.1:1");
        let my = LogStore::open_lazy("mariadb://u:pw@127.0.0.1:1/x").unwrap();
        assert_eq!(my.sql("a = ?"), "a = ?");
        assert!(matches!(
            LogStore::open_lazy("redis://x"),
            Err(StoreError::Scheme)
        ));
    }
}
