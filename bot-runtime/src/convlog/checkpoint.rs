//! WAL checkpoints of the embedded SQLite file, off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that fills the WAL,
//! and in WAL mode with `synchronous = NORMAL` the checkpoint is where the
//! fsyncs happen: a webhook whose delivery commit happened to trigger it
//! waited for the disk. So the pool's connections do not checkpoint
//! (`wal_autocheckpoint = 0`), and this task does, PASSIVE (it never waits
//! for, nor blocks, readers and writers), on a connection of its own, a few
//! times a second; the fsyncs stay on its thread. SQLite's documentation
//! suggests exactly this split for applications that care about commit
//! latency.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{ConnectOptions, Connection};

/// How often the WAL is checkpointed: at 2,000 deliveries/s this keeps it
/// to a few MB.
const EVERY: Duration = Duration::from_millis(250);

/// Checkpoints `pool`'s file until the pool is closed.
pub fn spawn(pool: SqlitePool) {
    tokio::spawn(async move {
        let opts = pool.connect_options();
        let mut conn: Option<SqliteConnection> = None;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            if conn.is_none() {
                match opts.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *c)
                .await
            {
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
                conn = None;
            }
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::convlog::store::Pool;
    use crate::convlog::{Exchange, LogStore, new_exchange_id};

    fn exchange(i: usize) -> Exchange {
        Exchange {
            id: new_exchange_id(),
            session_id: format!("s{i}"),
            user_id: None,
            owner: None,
            channel: "web".into(),
            user_input: "x".repeat(2000),
            bot_response: "y".repeat(2000),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            latency_ms: 1,
            created_at: i as i64,
        }
    }

    /// Commits only append to the WAL (the pool's connections never
    /// checkpoint); the background task moves the pages into the file.
    #[tokio::test]
    async fn commits_leave_checkpoints_to_the_background_task() {
        let dir = std::env::temp_dir().join(format!("clawdbot-ckpt-{:x}", rand::random::<u64>()));
        let file = dir.join("logs.db");
        let store = LogStore::open_lazy(&format!("sqlite://{}", file.display())).unwrap();
        let Pool::Sqlite(pool) = store.pool() else {
            panic!("an SQLite pool")
        };
        let auto: (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            auto.0, 0,
            "pool connections must not checkpoint in a commit"
        );
        store.migrate().await.unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        let batch: Vec<Exchange> = (0..400).map(exchange).collect();
        store.insert_batch(&batch).await.unwrap();
        let wal = std::fs::metadata(dir.join("logs.db-wal")).unwrap().len();
        assert!(wal > 1_000_000, "the rows went to the WAL: {wal} bytes");
        // Within a few checkpoint periods the file holds them.
        let mut grown = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            grown = std::fs::metadata(&file).unwrap().len();
            if grown > before + 1_000_000 {
                break;
            }
        }
        assert!(
            grown > before + 1_000_000,
            "no checkpoint: the file stayed at {grown} bytes (was {before})"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
