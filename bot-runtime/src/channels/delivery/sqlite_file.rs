//! The IM delivery queue in this replica's own SQLite file (no Redis, and
//! the log database is SQLite too): one connection, used in place.
//!
//! A delivery's record is on the webhook's path to its ack, so it commits
//! on the task that received it, with no hop to another thread: whoever
//! finds the connection free commits every record queued so far in one
//! transaction (group commit), and whoever holds it commits what queued up
//! meanwhile before it lets go. A commit in WAL mode with `synchronous =
//! NORMAL` is a write to the page cache (no fsync), tens of microseconds,
//! made with one system call per commit (see [`super::wal_vfs`]).
//! The rarer statements (claims, renewals, answers, pruning) run on the
//! blocking pool, and WAL checkpoints on a thread of their own (see
//! [`spawn_checkpointer`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::logs::{ClaimedRow, now_ms};

/// The SQL stores' table (migrations/*/0002), with partial indexes: a
/// record then changes three pages (row, key, due) instead of four, so
/// fewer WAL bytes per delivery. The queries are the same ones, and their
/// `state` terms select these indexes. A delivery's alias (Feishu's message
/// id) is a column of its own row, unique where set, rather than a second
/// row as in the SQL stores: one row and one index entry fewer per record.
/// (A WITHOUT ROWID table would put the ~0.5 KB rows in the key's b-tree,
/// whose inserts land at random: more page splits.)
const SHARED_SCHEMA: &str = include_str!("../../../migrations/sqlite/0002_channel_deliveries.sql");
const INDEXES: &str = "
CREATE INDEX channel_deliveries_due ON channel_deliveries (claim_until) WHERE state = 'pending';
CREATE INDEX channel_deliveries_expiry ON channel_deliveries (expires_at) WHERE state <> 'pending';";
const ALIAS: &str = "
ALTER TABLE channel_deliveries ADD COLUMN alias_key TEXT;
CREATE UNIQUE INDEX channel_deliveries_alias ON channel_deliveries (alias_key) WHERE alias_key IS NOT NULL;";
/// Pages of a new file. Each commit appends every page it changed whole to
/// the WAL (the row's, each index's, their splits'), so small pages mean fewer bytes
/// written, checkpointed and synced per delivery (a record is about 0.5 KB).
const PAGE_SIZE: u32 = 1024;
/// Checkpoints copy the WAL into the database beside the writer this often,
/// so little is left to copy when the log starts over.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The log starts over once it is this long. That needs the recording
/// connection held still for a moment (see [`spawn_checkpointer`]); until
/// then the file is reused in place (no fresh pages to zero).
const RESTART_AT_BYTES: u64 = 16 << 20;
/// Record rounds a committer runs before handing what is left to the
/// blocking pool, so one task does not keep committing for the others.
const MAX_ROUNDS: usize = 4;

struct Pending {
    keys: Vec<String>,
    payload: String,
    claim_until: i64,
    done: oneshot::Sender<Result<bool, String>>,
}

struct Inner {
    conn: Mutex<Connection>,
    queued: Mutex<Vec<Pending>>,
    claimed_by: String,
    dedupe_ttl_ms: i64,
}

/// Cheap to clone: every clone is the same file and connection.
#[derive(Clone)]
pub struct SqliteFile {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the connection leaves it usable: rusqlite's
    // transaction rolls back when dropped, unwinding included.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}"
        )));
    }
    // WAL + NORMAL: a crashed process loses nothing; a crashed machine can
    // lose the last commits (the file lives on pod-local scratch anyway).
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
}

/// The migration's `CREATE TABLE`, without its indexes, as "if not exists".
fn table_only(schema: &str) -> String {
    let table = schema.split("CREATE INDEX").next().unwrap_or(schema);
    table.replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
}

/// Creates the table, or gives a file from an earlier version what it
/// lacks: the partial indexes (the SQL stores' full ones before), the alias
/// column. Its alias rows stay valid until they expire (see [`record_batch`]).
fn create_or_upgrade(conn: &Connection) -> rusqlite::Result<()> {
    let index: Option<Option<String>> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'channel_deliveries_due'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !matches!(index, Some(Some(ref sql)) if sql.contains("WHERE")) {
        conn.execute_batch(&format!(
            "BEGIN; {} DROP INDEX IF EXISTS channel_deliveries_due; \
             DROP INDEX IF EXISTS channel_deliveries_expiry; {INDEXES} COMMIT;",
            table_only(SHARED_SCHEMA)
        ))?;
    }
    let has_alias: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('channel_deliveries') WHERE name = 'alias_key')",
        [],
        |r| r.get(0),
    )?;
    if !has_alias {
        conn.execute_batch(&format!("BEGIN; {ALIAS} COMMIT;"))?;
    }
    Ok(())
}

impl SqliteFile {
    /// Opens (creating when missing) the file and its table, and starts
    /// the checkpoint thread.
    pub fn open(path: &Path, claimed_by: &str, dedupe_ttl_ms: i64) -> anyhow::Result<Self> {
        let file = Self::open_without_checkpoints(path, claimed_by, dedupe_ttl_ms)?;
        spawn_checkpointer(path.to_path_buf(), Arc::downgrade(&file.inner));
        Ok(file)
    }

    fn open_without_checkpoints(
        path: &Path,
        claimed_by: &str,
        dedupe_ttl_ms: i64,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let fail = |e: rusqlite::Error| anyhow::anyhow!("deliveries file {}: {e}", path.display());
        // The recording connection writes each commit's WAL frames at once.
        let conn = match super::wal_vfs::name() {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs),
            None => Connection::open(path),
        }
        .map_err(fail)?;
        // Before WAL mode writes the header; a file that exists keeps its own.
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
            .map_err(fail)?;
        configure(&conn).map_err(fail)?;
        // Checkpoints are the side thread's job.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(fail)?;
        create_or_upgrade(&conn).map_err(fail)?;
        let inner = Arc::new(Inner {
            conn: Mutex::new(conn),
            queued: Mutex::new(Vec::new()),
            claimed_by: claimed_by.to_owned(),
            dedupe_ttl_ms,
        });
        Ok(Self { inner })
    }

    /// Records a delivery under `keys` (its own key first, then aliases),
    /// claimed by this replica until `claim_until`. `false`: a key is
    /// already known (or taken by an earlier record of the same commit).
    pub async fn record(
        &self,
        keys: Vec<String>,
        payload: String,
        claim_until: i64,
    ) -> Result<bool, String> {
        let (done, answer) = oneshot::channel();
        lock(&self.inner.queued).push(Pending {
            keys,
            payload,
            claim_until,
            done,
        });
        if !self.inner.commit_queued(MAX_ROUNDS) {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.commit_queued(usize::MAX));
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the delivery recorder stopped".into()))
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, String> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_conn(f))
            .await
            .map_err(|e| format!("deliveries file task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Claims up to `max` pending deliveries whose claim has lapsed (this
    /// replica's earlier run died, or it released them while draining, or
    /// they were recorded while its workers were busy), oldest first.
    pub async fn claim_due(
        &self,
        now: i64,
        claim_until: i64,
        max: u32,
    ) -> Result<Vec<ClaimedRow>, String> {
        self.blocking(move |c, me| {
            let tx = c.transaction()?;
            let mut out = Vec::new();
            {
                let mut due = tx.prepare_cached(
                    "SELECT dedupe_key, payload, attempts FROM channel_deliveries \
                     WHERE state = 'pending' AND claim_until < ?1 ORDER BY claim_until LIMIT ?2",
                )?;
                let rows = due.query_map(params![now, i64::from(max)], |r| {
                    Ok(ClaimedRow {
                        key: r.get(0)?,
                        payload: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        attempts: r.get::<_, i64>(2)? + 1,
                    })
                })?;
                for row in rows {
                    out.push(row?);
                }
                let mut claim = tx.prepare_cached(
                    "UPDATE channel_deliveries SET claimed_by = ?1, claim_until = ?2, \
                     attempts = attempts + 1 WHERE dedupe_key = ?3",
                )?;
                for c in &out {
                    claim.execute(params![me, claim_until, c.key])?;
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Extends this replica's claim; `false` when it is no longer ours.
    pub async fn renew(&self, key: String, claim_until: i64) -> Result<bool, String> {
        self.blocking(move |c, me| {
            let n = c
                .prepare_cached(
                    "UPDATE channel_deliveries SET claim_until = ?1 \
                     WHERE dedupe_key = ?2 AND claimed_by = ?3 AND state = 'pending'",
                )?
                .execute(params![claim_until, key, me])?;
            Ok(n == 1)
        })
        .await
    }

    /// Marks a delivery answered; its key stays (for dedupe) for the TTL.
    pub async fn finish(&self, key: String) -> Result<(), String> {
        let ttl = self.inner.dedupe_ttl_ms;
        self.blocking(move |c, _| {
            c.prepare_cached(
                "UPDATE channel_deliveries SET state = 'done', payload = NULL, expires_at = ?1 \
                 WHERE dedupe_key = ?2",
            )?
            .execute(params![now_ms() + ttl, key])?;
            Ok(())
        })
        .await
    }

    /// Gives up this replica's claim at once (draining): due at next start.
    pub async fn release(&self, key: String) -> Result<(), String> {
        self.blocking(move |c, me| {
            c.prepare_cached(
                "UPDATE channel_deliveries SET claim_until = 0 \
                 WHERE dedupe_key = ?1 AND claimed_by = ?2 AND state = 'pending'",
            )?
            .execute(params![key, me])?;
            Ok(())
        })
        .await
    }

    /// Deletes up to `max_rows` answered or alias keys past their TTL.
    pub async fn prune(&self, now: i64, max_rows: u32) -> Result<u64, String> {
        self.blocking(move |c, _| {
            let n = c
                .prepare_cached(
                    "DELETE FROM channel_deliveries WHERE dedupe_key IN (SELECT dedupe_key FROM \
                     channel_deliveries WHERE state <> 'pending' AND expires_at < ?1 \
                     ORDER BY expires_at LIMIT ?2)",
                )?
                .execute(params![now, i64::from(max_rows)])?;
            Ok(n as u64)
        })
        .await
    }

    /// Deliveries recorded and not yet answered.
    pub async fn pending(&self) -> Result<u64, String> {
        self.blocking(|c, _| {
            c.query_row(
                "SELECT COUNT(*) FROM channel_deliveries WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
        .await
    }
}

impl Inner {
    /// Runs `f` with the connection, then commits the records that queued
    /// up while it was held (their tasks found it busy and left that to
    /// the holder).
    fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let r = f(&mut lock(&self.conn), &self.claimed_by);
        self.commit_queued(usize::MAX);
        r
    }

    /// Commits queued records while the connection is free, for at most
    /// `rounds` transactions. `false`: records are still queued and nobody
    /// holds the connection to commit them (the caller hands them on).
    ///
    /// Whoever queues a record tries the connection after queuing it, and
    /// whoever holds it looks at the queue again after letting go, so a
    /// queued record always has a committer.
    fn commit_queued(&self, rounds: usize) -> bool {
        for _ in 0..rounds {
            {
                let Ok(mut conn) = self.conn.try_lock() else {
                    return true;
                };
                let batch = std::mem::take(&mut *lock(&self.queued));
                if !batch.is_empty() {
                    self.commit(&mut conn, batch);
                }
            }
            if lock(&self.queued).is_empty() {
                return true;
            }
        }
        false
    }

    fn commit(&self, conn: &mut Connection, batch: Vec<Pending>) {
        let now = now_ms();
        match record_batch(
            conn,
            &batch,
            &self.claimed_by,
            now,
            now + self.dedupe_ttl_ms,
        ) {
            Ok(fresh) => {
                for (p, f) in batch.into_iter().zip(fresh) {
                    let _ = p.done.send(Ok(f));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for p in batch {
                    let _ = p.done.send(Err(why.clone()));
                }
            }
        }
    }
}

/// One transaction for the batch; per record `false` when a key is known,
/// or taken by an earlier record of the batch. Keys are known as a row's
/// own key or as its alias, and the first alias is stored in the record's
/// own row. The own key and that alias are claimed by the insert itself
/// (both are unique); lookups first find an own key known as an alias, and
/// an alias known either way (rows of earlier versions hold aliases as own
/// keys), so a known key leaves nothing behind. Further aliases, which no
/// platform has, get rows of their own.
fn record_batch(
    conn: &mut Connection,
    batch: &[Pending],
    claimed_by: &str,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<Vec<bool>> {
    let tx = ImmediateTx::begin(conn)?;
    let mut fresh = Vec::with_capacity(batch.len());
    {
        let mut known_alias =
            tx.prepare_cached("SELECT 1 FROM channel_deliveries WHERE alias_key = ?1")?;
        let mut known_key =
            tx.prepare_cached("SELECT 1 FROM channel_deliveries WHERE dedupe_key = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO channel_deliveries \
             (dedupe_key, state, payload, attempts, claimed_by, claim_until, created_at, expires_at, alias_key) \
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?;
        for p in batch {
            let Some((own, aliases)) = p.keys.split_first() else {
                fresh.push(false);
                continue;
            };
            let mut known = known_alias.exists([own])?;
            for k in aliases {
                if known {
                    break;
                }
                known = known_key.exists([k])? || known_alias.exists([k])?;
            }
            let (first, more) = match aliases.split_first() {
                Some((first, more)) => (Some(first), more),
                None => (None, aliases),
            };
            let new = !known
                && insert.execute(params![
                    own,
                    "pending",
                    p.payload,
                    claimed_by,
                    p.claim_until,
                    now,
                    expires_at,
                    first
                ])? == 1;
            fresh.push(new);
            if !new {
                continue;
            }
            for k in more {
                insert.execute(params![
                    k,
                    "alias",
                    None::<&str>,
                    claimed_by,
                    p.claim_until,
                    now,
                    expires_at,
                    None::<&str>
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(fresh)
}

/// `BEGIN IMMEDIATE` ... `COMMIT` through cached statements (rusqlite's
/// transactions parse both anew each time: a few percent of a record).
/// Rolls back when dropped uncommitted, unwinding included.
struct ImmediateTx<'c>(&'c Connection);

impl<'c> ImmediateTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self(conn))
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.0.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for ImmediateTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
    }
}

impl Drop for ImmediateTx<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Keeps the WAL short. Under steady load a checkpoint running beside the
/// writer never finds the log fully copied (new commits land while it
/// copies), so SQLite never starts the log over: the WAL would grow without
/// end, and every commit would append to fresh file pages (which the kernel
/// zeroes first) instead of reusing cached ones. So each round copies the
/// log on a connection of its own, beside the writer (PASSIVE: it neither
/// waits for nor blocks it). Once the log is [`RESTART_AT_BYTES`] long,
/// the round also syncs the database file and copies again, still beside
/// the writer, and then copies the few frames committed meanwhile on the
/// recording connection itself: the log is then fully copied and the next
/// commit starts it over. Records wait for that short while only (a WAL
/// sync and a database sync of little data), once per restart, not every
/// round.
fn spawn_checkpointer(path: PathBuf, inner: std::sync::Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("deliveries-ckpt".into())
        .spawn(move || {
            let mut side = None;
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if let Err(e) = checkpoint_round(&path, &mut side, &inner, RESTART_AT_BYTES) {
                    tracing::warn!(error = %e, "SQLite checkpoint of the deliveries file failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no checkpoint thread for the deliveries file; its WAL will grow");
    }
}

/// The checkpointer's own handles on the file.
struct Side {
    conn: Connection,
    page_size: u64,
    /// Kept open for good: closing a descriptor of a SQLite file drops the
    /// process's POSIX locks on it, the connections' included.
    db: std::fs::File,
}

impl Side {
    fn open(path: &Path) -> Result<Self, String> {
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        configure(&conn).map_err(|e| e.to_string())?;
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        let db = std::fs::File::open(path).map_err(|e| e.to_string())?;
        Ok(Self {
            conn,
            page_size: page_size.max(512) as u64,
            db,
        })
    }
}

/// One round: the log copied beside the writer; past `restart_at` bytes,
/// the database synced and the rest copied on the writer's connection.
fn checkpoint_round(
    path: &Path,
    side: &mut Option<Side>,
    inner: &Inner,
    restart_at: u64,
) -> Result<(), String> {
    // A failed checkpoint leaves the side connection usable; it (and the
    // descriptor, see `Side::db`) is kept for the next round.
    let s = match side {
        Some(s) => s,
        None => side.insert(Side::open(path)?),
    };
    let frames = checkpoint(&s.conn).map_err(|e| e.to_string())?;
    if frames.saturating_mul(s.page_size) < restart_at {
        return Ok(());
    }
    // Beside the writer still: the copy's pages reach the disk now, and a
    // second copy takes the frames committed meanwhile (syncing them in
    // the log first), so the syncs SQLite makes under the writer's lock
    // have only a few milliseconds' commits left to write.
    let sync = || s.db.sync_data().map_err(|e| e.to_string());
    sync()?;
    checkpoint(&s.conn).map_err(|e| e.to_string())?;
    sync()?;
    inner
        .with_conn(|c, _| checkpoint(c))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A PASSIVE checkpoint; the frames in the log.
fn checkpoint(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(r.get::<_, i64>(1)?.max(0) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "clawdbot-deliveries-{name}-{:08x}",
                rand::random::<u32>()
            ));
            Self(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("deliveries.db")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    const DAY_MS: i64 = 86_400_000;

    #[tokio::test]
    async fn records_dedupe_claims_and_expire() {
        let dir = Scratch::new("rows");
        let f = SqliteFile::open_without_checkpoints(&dir.file(), "a", DAY_MS).unwrap();
        let t = now_ms();
        assert!(
            f.record(keys(&["s:E1", "s:m:M1"]), "one".into(), t + 60_000)
                .await
                .unwrap()
        );
        // Known delivery id, or a new delivery id carrying a known message id.
        assert!(
            !f.record(keys(&["s:E1"]), "again".into(), t + 60_000)
                .await
                .unwrap()
        );
        assert!(
            !f.record(keys(&["s:E2", "s:m:M1"]), "alias".into(), t + 60_000)
                .await
                .unwrap()
        );
        // Nothing of the refused one was written: E2 alone is new.
        assert!(f.record(keys(&["s:E2"]), "two".into(), t).await.unwrap());
        assert_eq!(f.pending().await.unwrap(), 2);

        // E2 was recorded due at once; E1 is claimed until t + 60 s.
        let due = f.claim_due(t + 1, t + 120_000, 10).await.unwrap();
        assert_eq!(
            due,
            vec![ClaimedRow {
                key: "s:E2".into(),
                payload: "two".into(),
                attempts: 2
            }]
        );
        assert!(
            f.claim_due(t + 1, t + 120_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let due = f.claim_due(t + 61_000, t + 120_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].key.as_str(), due[0].payload.as_str()),
            ("s:E1", "one")
        );
        assert!(f.renew("s:E1".into(), t + 200_000).await.unwrap());
        assert!(
            !f.renew("s:m:M1".into(), t + 200_000).await.unwrap(),
            "an alias is never claimed"
        );

        f.finish("s:E1".into()).await.unwrap();
        assert_eq!(f.pending().await.unwrap(), 1);
        assert!(
            !f.record(keys(&["s:E1"]), "late".into(), t).await.unwrap(),
            "answered stays known"
        );
        assert!(
            !f.renew("s:E1".into(), t + 200_000).await.unwrap(),
            "answered is not renewed"
        );

        // Released: due at once.
        f.release("s:E2".into()).await.unwrap();
        assert_eq!(f.claim_due(t + 1, t + 120_000, 10).await.unwrap().len(), 1);

        // Past the TTL the answered key and its alias go (one row); pending
        // rows never do.
        assert_eq!(f.prune(t + DAY_MS, 1000).await.unwrap(), 0);
        assert_eq!(f.prune(t + 2 * DAY_MS, 1000).await.unwrap(), 1);
        assert_eq!(f.pending().await.unwrap(), 1);
        assert!(
            f.record(keys(&["s:E3", "s:m:M1"]), "alias free again".into(), t)
                .await
                .unwrap()
        );
        assert!(
            f.record(keys(&["s:E1"]), "new again".into(), t)
                .await
                .unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_each_new_exactly_once() {
        let dir = Scratch::new("race");
        let f = SqliteFile::open(&dir.file(), "a", DAY_MS).unwrap();
        // 300 messages, each delivered three times: twice with the same
        // delivery id, once with a new delivery id and the same message id.
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..3 {
            for i in 0..300 {
                let f = f.clone();
                let id = if round == 2 {
                    format!("f:E{i}-retry")
                } else {
                    format!("f:E{i}")
                };
                tasks.spawn(async move {
                    f.record(vec![id, format!("f:m:M{i}")], format!("{i}"), 0)
                        .await
                });
            }
        }
        let mut fresh = 0;
        while let Some(r) = tasks.join_next().await {
            fresh += usize::from(r.unwrap().unwrap());
        }
        assert_eq!(fresh, 300);
        assert_eq!(f.pending().await.unwrap(), 300);
        let claimed = f.claim_due(1, now_ms() + 60_000, 1000).await.unwrap();
        let mut payloads: Vec<i64> = claimed.iter().map(|c| c.payload.parse().unwrap()).collect();
        payloads.sort_unstable();
        assert_eq!(payloads, (0..300).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_checkpoint_round_lets_a_long_log_start_over() {
        let dir = Scratch::new("wal");
        let path = dir.file();
        let f = SqliteFile::open_without_checkpoints(&path, "a", DAY_MS).unwrap();
        let wal = || {
            std::fs::metadata(path.with_extension("db-wal"))
                .unwrap()
                .len()
        };
        let mut n = 0;
        let mut record = async |count: usize| {
            for _ in 0..count {
                f.record(keys(&[&format!("d:{n}")]), "x".repeat(300), 0)
                    .await
                    .unwrap();
                n += 1;
            }
        };
        record(200).await;
        let before = wal();
        assert!(
            before > 200 * u64::from(PAGE_SIZE),
            "each commit appends whole pages ({before} bytes)"
        );
        // Without a checkpoint the log only grows.
        record(10).await;
        let grown = wal();
        assert!(grown > before, "{grown} <= {before}");
        // Past the limit (any length is, here): the next commits reuse the
        // log from its start.
        let mut side = None;
        checkpoint_round(&path, &mut side, &f.inner, 0).unwrap();
        record(10).await;
        assert_eq!(wal(), grown, "the log started over instead of growing");
        assert_eq!(f.pending().await.unwrap(), 220);
        let page_size: i64 = lock(&f.inner.conn)
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, i64::from(PAGE_SIZE));
    }

    #[test]
    fn an_uncommitted_transaction_rolls_back_and_leaves_the_connection_usable() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")
            .unwrap();
        {
            let tx = ImmediateTx::begin(&c).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
            assert!(tx.execute("INSERT INTO t VALUES (NULL)", []).is_err());
        }
        assert!(c.is_autocommit(), "rolled back when dropped");
        let tx = ImmediateTx::begin(&c).unwrap();
        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        tx.commit().unwrap();
        let xs: Vec<i64> = c
            .prepare("SELECT x FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(xs, [2]);
    }

    #[tokio::test]
    async fn a_file_from_an_earlier_version_gets_the_partial_indexes() {
        let dir = Scratch::new("upgrade");
        let path = dir.file();
        std::fs::create_dir_all(&dir.0).unwrap();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SHARED_SCHEMA).unwrap();
            c.execute(
                "INSERT INTO channel_deliveries (dedupe_key, state, payload, attempts, \
                 claimed_by, claim_until, created_at, expires_at) \
                 VALUES ('old', 'pending', 'p', 1, 'a', 0, 0, 0), \
                 ('f:m:OLD', 'alias', NULL, 1, 'a', 0, 0, 9000000000000)",
                [],
            )
            .unwrap();
        }
        let f = SqliteFile::open_without_checkpoints(&path, "b", DAY_MS).unwrap();
        let plan = |sql: &str| -> String {
            let c = lock(&f.inner.conn);
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = st.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let due = plan(
            "SELECT dedupe_key FROM channel_deliveries WHERE state = 'pending' \
             AND claim_until < 5 ORDER BY claim_until LIMIT 3",
        );
        assert!(due.contains("channel_deliveries_due"), "{due}");
        let expired = plan(
            "SELECT dedupe_key FROM channel_deliveries WHERE state <> 'pending' \
             AND expires_at < 5 ORDER BY expires_at LIMIT 3",
        );
        assert!(expired.contains("channel_deliveries_expiry"), "{expired}");
        let sql: String = lock(&f.inner.conn)
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'channel_deliveries_expiry'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains("WHERE state <> 'pending'"), "{sql}");
        let alias = plan("SELECT 1 FROM channel_deliveries WHERE alias_key = 'x'");
        assert!(alias.contains("channel_deliveries_alias"), "{alias}");
        // An alias row of the earlier version still stops its message.
        let t = now_ms() + 60_000;
        assert!(
            !f.record(keys(&["f:E9", "f:m:OLD"]), "dup".into(), t)
                .await
                .unwrap()
        );
        assert!(
            f.record(keys(&["f:E9", "f:m:NEW"]), "new".into(), t)
                .await
                .unwrap()
        );
        assert!(
            !f.record(keys(&["f:E10", "f:m:NEW"]), "dup".into(), t)
                .await
                .unwrap()
        );
        // The row written before the upgrade is still there to answer.
        let claimed = f.claim_due(now_ms(), now_ms() + 1000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].key, "old");
        drop(f);
        // Opening again leaves the upgraded file as it is.
        let again = SqliteFile::open_without_checkpoints(&path, "b", DAY_MS).unwrap();
        assert_eq!(again.pending().await.unwrap(), 2);
    }

    #[test]
    fn one_commit_dedupes_its_own_records_by_either_key() {
        let dir = Scratch::new("batch");
        let f = SqliteFile::open_without_checkpoints(&dir.file(), "a", DAY_MS).unwrap();
        let pending = |k: &[&str]| Pending {
            keys: keys(k),
            payload: "p".into(),
            claim_until: 0,
            done: oneshot::channel().0,
        };
        let batch = [
            pending(&["f:E1", "f:m:M1"]),
            pending(&["f:E2", "f:m:M1"]), // the same message, redelivered as a new event
            pending(&["f:m:M1"]),         // a key that an earlier record took as its alias
            pending(&["f:E1"]),
            pending(&["f:E3", "f:m:M3"]),
            pending(&[]),
        ];
        let fresh = record_batch(&mut lock(&f.inner.conn), &batch, "a", 1, DAY_MS).unwrap();
        assert_eq!(fresh, [true, false, false, false, true, false]);
        let rows: i64 = lock(&f.inner.conn)
            .query_row("SELECT COUNT(*) FROM channel_deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 2,
            "E1 (alias M1), E3 (alias M3), nothing of the duplicates"
        );
    }
}
