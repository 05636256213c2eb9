//! The writes on a webhook's ack path (record a delivery, bind a
//! signature), written once for every engine on one connection.
//!
//! On the embedded SQLite file they are group-committed: one task takes
//! the writes that arrived together and runs them in one transaction, so
//! a burst of deliveries costs one commit (and its WAL pages) instead of
//! one each, and no two connections wait on SQLite's write lock. Each
//! write still gets its own answer. On PostgreSQL and MySQL, shared with
//! other replicas, each write runs by itself on a pooled connection.

use sqlx::mysql::MySql;
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Recorded;
use crate::convlog::store::{Conn, LogStore, Pool, StoreError, on_conn};

/// Most writes in one SQLite transaction.
const MAX_GROUP: usize = 256;

/// One write of the ack path.
pub enum Write {
    /// A delivery under `keys` (its own first, then aliases), unless a key
    /// is known (`Duplicate`). `binding` (a signature key, until when) is
    /// first bound to the delivery's own key, unless bound to another
    /// (`Replayed`); either way nothing else is written.
    Record {
        keys: Vec<String>,
        payload: String,
        claimed_by: String,
        now: i64,
        claim_until: i64,
        expires_at: i64,
        binding: Option<(String, i64)>,
    },
    /// `key` bound to `message` until `expires_at` unless a live binding
    /// exists: `New` when it is bound to `message` now, else `Replayed`.
    Bind {
        key: String,
        message: String,
        now: i64,
        expires_at: i64,
    },
}

type Job = (Write, oneshot::Sender<Result<Recorded, StoreError>>);

#[derive(Clone)]
pub struct Writes {
    sql: Arc<Statements>,
    /// SQLite: the group-commit task's queue, started on first use.
    group: Arc<std::sync::OnceLock<mpsc::Sender<Job>>>,
}

/// The ack path's statements in the store's dialect, made once.
struct Statements {
    store: LogStore,
    /// One row unless its key is known (then nothing: 0 rows), on every
    /// engine. Only a duplicate key is possible (keys are bounded by the
    /// caller), and MySQL's INSERT IGNORE reports it as 0 rows whatever
    /// the connection's found-rows flag says.
    insert: String,
    /// An expired binding not pruned yet is taken over.
    rebind: String,
    read_bound: String,
}

impl Statements {
    fn new(store: LogStore) -> Self {
        let insert = store.sql(match store.pool() {
            Pool::MySql(_) => {
                "INSERT IGNORE INTO channel_deliveries \
                 (dedupe_key, state, payload, attempts, claimed_by, claim_until, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            }
            _ => {
                "INSERT INTO channel_deliveries \
                 (dedupe_key, state, payload, attempts, claimed_by, claim_until, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
            }
        });
        let rebind = store.sql(
            "UPDATE channel_deliveries SET payload = ?, created_at = ?, expires_at = ? \
             WHERE dedupe_key = ? AND state = 'bound' AND expires_at < ?",
        );
        let read_bound = store.sql("SELECT payload FROM channel_deliveries WHERE dedupe_key = ?");
        Self {
            store,
            insert,
            rebind,
            read_bound,
        }
    }
}

impl Writes {
    pub fn new(store: LogStore) -> Self {
        Self {
            sql: Arc::new(Statements::new(store)),
            group: Default::default(),
        }
    }

    pub async fn run(&self, w: Write) -> Result<Recorded, StoreError> {
        let sql = &self.sql;
        match sql.store.pool() {
            Pool::Sqlite(_) => {
                let queue = self.group.get_or_init(|| {
                    let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
                    tokio::spawn(group_commit(self.sql.clone(), rx));
                    tx
                });
                let (done, answer) = oneshot::channel();
                queue
                    .send((w, done))
                    .await
                    .map_err(|_| StoreError::Group("the SQLite writer stopped".into()))?;
                answer
                    .await
                    .map_err(|_| StoreError::Group("the SQLite writer stopped".into()))?
            }
            Pool::Postgres(p) => {
                Ok(apply(sql, Conn::Postgres(&mut *p.acquire().await?), &w).await?)
            }
            Pool::MySql(p) => Ok(apply(sql, Conn::MySql(&mut *p.acquire().await?), &w).await?),
        }
    }
}

/// Runs the writes waiting together in one transaction, until every
/// sender is gone. A failed transaction fails each of its writes (their
/// webhooks answer 503 and the platforms retry); nothing is half written.
async fn group_commit(sql: Arc<Statements>, mut queue: mpsc::Receiver<Job>) {
    let Pool::Sqlite(pool) = sql.store.pool() else {
        return;
    };
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let written = async {
            let mut tx = pool.begin().await?;
            let mut out = Vec::with_capacity(jobs.len());
            for (w, _) in &jobs {
                out.push(apply(&sql, Conn::Sqlite(&mut tx), w).await?);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        }
        .await;
        match written {
            Ok(out) => {
                for ((_, done), fresh) in jobs.into_iter().zip(out) {
                    let _ = done.send(Ok(fresh));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, done) in jobs {
                    let _ = done.send(Err(StoreError::Group(why.clone())));
                }
            }
        }
    }
}

/// The statements of one write on `conn`.
async fn apply(sql: &Statements, mut conn: Conn<'_>, w: &Write) -> Result<Recorded, sqlx::Error> {
    match w {
        Write::Record {
            keys,
            payload,
            claimed_by,
            now,
            claim_until,
            expires_at,
            binding,
        } => {
            let row = || Row {
                payload,
                claimed_by,
                now: *now,
                claim_until: *claim_until,
                expires_at: *expires_at,
            };
            if let Some((sig, until)) = binding {
                // The usual case, nothing known yet: the delivery and its
                // binding in one statement. Something known makes it
                // write nothing; then the two steps say what it was.
                let bound = Some((sig.as_str(), *until));
                if record(sql, conn.reborrow(), keys, row(), bound).await? {
                    return Ok(Recorded::New);
                }
                if !bind(sql, conn.reborrow(), sig, &keys[0], *now, *until).await? {
                    return Ok(Recorded::Replayed);
                }
            }
            Ok(if record(sql, conn, keys, row(), None).await? {
                Recorded::New
            } else {
                Recorded::Duplicate
            })
        }
        Write::Bind {
            key,
            message,
            now,
            expires_at,
        } => Ok(if bind(sql, conn, key, message, *now, *expires_at).await? {
            Recorded::New
        } else {
            Recorded::Replayed
        }),
    }
}

/// The columns of a delivery's rows besides its keys.
struct Row<'a> {
    payload: &'a str,
    claimed_by: &'a str,
    now: i64,
    claim_until: i64,
    expires_at: i64,
}

/// `false` when a key is known: a duplicate, nothing written. `bound`: a
/// signature key bound to the delivery's own key until then, written in
/// the same statement.
async fn record(
    sql: &Statements,
    conn: Conn<'_>,
    keys: &[String],
    r: Row<'_>,
    bound: Option<(&str, i64)>,
) -> Result<bool, sqlx::Error> {
    on_conn!(conn, c, _Db => {
        if let ([key], None) = (keys, bound) {
            let n = sqlx::query(&sql.insert)
                .bind(key.as_str())
                .bind("pending")
                .bind(Some(r.payload))
                .bind(1_i64)
                .bind(r.claimed_by)
                .bind(r.claim_until)
                .bind(r.now)
                .bind(r.expires_at)
                .execute(&mut *c)
                .await?
                .rows_affected();
            return Ok(n == 1);
        }
        // Several keys: one multi-row statement, atomic on every engine.
        // A known key makes it fail with a unique violation and write
        // nothing: the duplicate. The failed statement alone is undone
        // (SQLite and MySQL keep the transaction; PostgreSQL never runs
        // these in a group).
        let count = keys.len() + usize::from(bound.is_some());
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; count].join(", ");
        let all = sql.store.sql(&format!(
            "INSERT INTO channel_deliveries \
             (dedupe_key, state, payload, attempts, claimed_by, claim_until, created_at, expires_at) \
             VALUES {rows}"
        ));
        let mut q = sqlx::query(&all);
        for (i, key) in keys.iter().enumerate() {
            let (state, body) = if i == 0 { ("pending", Some(r.payload)) } else { ("alias", None) };
            q = q
                .bind(key.as_str())
                .bind(state)
                .bind(body)
                .bind(1_i64)
                .bind(r.claimed_by)
                .bind(r.claim_until)
                .bind(r.now)
                .bind(r.expires_at);
        }
        // The binding's row, as `bind` writes it.
        if let Some((sig, until)) = bound {
            q = q
                .bind(sig)
                .bind("bound")
                .bind(Some(keys[0].as_str()))
                .bind(0_i64)
                .bind("")
                .bind(0_i64)
                .bind(r.now)
                .bind(until);
        }
        match q.execute(&mut *c).await {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Binds `key` to `message` until `expires_at` unless a live binding
/// exists: whether it is bound to `message` now.
async fn bind(
    sql: &Statements,
    conn: Conn<'_>,
    key: &str,
    message: &str,
    now: i64,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    on_conn!(conn, c, _Db => {
        let n = sqlx::query(&sql.insert)
            .bind(key)
            .bind("bound")
            .bind(Some(message))
            .bind(0_i64)
            .bind("")
            .bind(0_i64)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *c)
            .await?
            .rows_affected();
        if n == 1 {
            return Ok(true);
        }
        let n = sqlx::query(&sql.rebind)
            .bind(message)
            .bind(now)
            .bind(expires_at)
            .bind(key)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected();
        if n == 1 {
            return Ok(true);
        }
        let bound: Option<(Option<String>,)> =
            sqlx::query_as(&sql.read_bound).bind(key).fetch_optional(&mut *c).await?;
        Ok(bound.and_then(|(m,)| m).as_deref() == Some(message))
    })
}
