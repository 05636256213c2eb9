//! `bot-runtime rekey --from KEY_ID`: rewrites conversation-log text
//! sealed with an old key under the active one, in batches, so the old key
//! can leave the keyring. Idempotent and resumable: a rewritten row no
//! longer names the old key, so a rerun (or a run after a crash) picks up
//! only what is left. A row is updated only when it is unchanged since it
//! was read; rows that cannot be opened (tampered) are counted and left as
//! they are.

use super::Exchange;
use sqlx::{MySql, Postgres, Sqlite};

use super::store::{COLUMNS, LogStore, Pool, StoreError, on_pool};
use crate::crypto::Keyring;

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rekeyed {
    pub rewritten: u64,
    /// Rows naming the old key whose text failed to open: left as they are.
    pub unreadable: u64,
}

/// `LIKE` pattern of values sealed with key `id`: `!` escapes the
/// pattern characters a key id may hold (`_`) on every engine.
fn sealed_with(id: &str) -> String {
    let escaped: String = id
        .chars()
        .flat_map(|c| match c {
            '_' | '%' | '!' => vec!['!', c],
            c => vec![c],
        })
        .collect();
    format!("{}{escaped}$%", crate::crypto::PREFIX)
}

/// Rewrites every row that names key `from` under `ring`'s active key,
/// `batch` rows per transaction; `progress` hears the totals after each.
pub async fn rekey(
    store: &LogStore,
    ring: &Keyring,
    from: &str,
    batch: u32,
    mut progress: impl FnMut(Rekeyed),
) -> Result<Rekeyed, StoreError> {
    let pattern = sealed_with(from);
    let select = store.sql(&format!(
        "SELECT {COLUMNS} FROM conversation_logs \
         WHERE (user_input LIKE ? ESCAPE '!' OR bot_response LIKE ? ESCAPE '!') \
         AND (created_at > ? OR (created_at = ? AND id > ?)) \
         ORDER BY created_at, id LIMIT ?"
    ));
    let update = store.sql(
        "UPDATE conversation_logs SET user_input = ?, bot_response = ? \
         WHERE id = ? AND user_input = ? AND bot_response = ?",
    );
    let mut done = Rekeyed::default();
    let mut after = (i64::MIN, String::new());
    loop {
        let rows: Vec<Exchange> = on_pool!(store.pool(), p, _Db => {
            sqlx::query_as::<_, Exchange>(&select)
                .bind(&pattern)
                .bind(&pattern)
                .bind(after.0)
                .bind(after.0)
                .bind(&after.1)
                .bind(i64::from(batch.max(1)))
                .fetch_all(p)
                .await?
        });
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = (last.created_at, last.id.clone());
        let mut rewrites = Vec::with_capacity(rows.len());
        for row in rows {
            let (stored_input, stored_response) =
                (row.user_input.clone(), row.bot_response.clone());
            let (opened, errors) = row.opened(ring);
            if errors.is_empty() {
                rewrites.push((opened.sealed(ring), stored_input, stored_response));
            } else {
                done.unreadable += 1;
            }
        }
        done.rewritten += on_pool!(store.pool(), p, _Db => {
            let mut tx = p.begin().await?;
            let mut n = 0;
            for (new, old_input, old_response) in &rewrites {
                n += sqlx::query(&update)
                    .bind(&new.user_input)
                    .bind(&new.bot_response)
                    .bind(&new.id)
                    .bind(old_input)
                    .bind(old_response)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            n
        });
        progress(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_escapes_like_wildcards() {
        assert_eq!(sealed_with("k2025"), "$cb1$k2025$%");
        assert_eq!(sealed_with("old_key"), "$cb1$old!_key$%");
    }
}
