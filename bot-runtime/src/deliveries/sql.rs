//! The SQL delivery store (used when Redis is not configured): the
//! `channel_deliveries` table of the log database, through the log store's
//! pool (one pool per database). One row per dedupe key, claimed with an
//! expiring lease so a replica that dies mid-answer hands its deliveries to
//! the others.

use std::time::Duration;

use clawdbot_config::ChannelsConfig;
use sqlx::mysql::MySql;
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;

use super::sql_writes::{Write, Writes};
use super::{Binding, Claimed, DeliveryStore, QueueError, Recorded, StoreFuture};
use crate::convlog::store::{LogStore, Pool, StoreError, on_pool};
use crate::support::timefmt::now_ms;

/// Expired dedupe keys deleted per statement.
pub(super) const PRUNE_BATCH: u64 = 1000;
/// How often lapsed claims are looked for.
const POLL: Duration = Duration::from_secs(2);

/// A delivery this replica now holds the claim on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRow {
    pub key: String,
    pub payload: String,
    pub attempts: i64,
}

/// The delivery table on the log store's pool. The methods with explicit
/// times are the statements (tested on every engine); [`DeliveryStore`]
/// calls them with the clock, this replica's name and the configured TTLs.
#[derive(Clone)]
pub struct SqlDeliveries {
    store: LogStore,
    writes: Writes,
    replica: String,
    lease_ms: i64,
    dedupe_ttl_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqlDeliveries {
    pub fn new(store: LogStore, replica: String, cfg: &ChannelsConfig) -> Self {
        Self {
            writes: Writes::new(store.clone()),
            store,
            replica,
            lease_ms: ms(Duration::from_secs(cfg.claim_lease_secs)),
            dedupe_ttl_ms: ms(Duration::from_secs(cfg.dedupe_ttl_secs)),
        }
    }

    fn sql(&self, text: &str) -> String {
        self.store.sql(text)
    }

    fn pool(&self) -> &Pool {
        self.store.pool()
    }

    /// Records a delivery under `keys` (its own key first, then aliases)
    /// in one statement, claimed by `claimed_by` until `claim_until`.
    /// `false` when any key is already known: a duplicate, nothing written.
    pub async fn record_delivery(
        &self,
        keys: &[String],
        payload: &str,
        claimed_by: &str,
        now: i64,
        claim_until: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.writes
            .run(Write::Record {
                keys: keys.to_vec(),
                payload: payload.to_owned(),
                claimed_by: claimed_by.to_owned(),
                now,
                claim_until,
                expires_at,
                binding: None,
            })
            .await
            .map(|r| r == Recorded::New)
    }

    /// Binds `key` to `message` until `expires_at` unless a live binding
    /// exists: whether it is bound to `message` now. Kept as a row of its
    /// own state (`bound`) in the delivery table, pruned with the rest.
    pub async fn bind_delivery_key(
        &self,
        key: &str,
        message: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.writes
            .run(Write::Bind {
                key: key.to_owned(),
                message: message.to_owned(),
                now,
                expires_at,
            })
            .await
            .map(|r| r == Recorded::New)
    }

    /// Claims up to `max` pending deliveries whose claim has lapsed (their
    /// replica died, or released them while draining), oldest first.
    pub async fn claim_due_deliveries(
        &self,
        claimed_by: &str,
        now: i64,
        claim_until: i64,
        max: u32,
    ) -> Result<Vec<ClaimedRow>, StoreError> {
        let due = self.sql(
            "SELECT dedupe_key FROM channel_deliveries \
             WHERE state = 'pending' AND claim_until < ? ORDER BY claim_until LIMIT ?",
        );
        // The conditional update is the claim: of two replicas racing for a
        // row, only one sees it still lapsed.
        let claim = self.sql(
            "UPDATE channel_deliveries SET claimed_by = ?, claim_until = ?, attempts = attempts + 1 \
             WHERE dedupe_key = ? AND state = 'pending' AND claim_until < ?",
        );
        let read = self.sql(
            "SELECT dedupe_key, payload, attempts FROM channel_deliveries WHERE dedupe_key = ?",
        );
        let mut out = Vec::new();
        on_pool!(self.pool(), p, _Db => {
            let keys: Vec<(String,)> = sqlx::query_as(&due)
                .bind(now)
                .bind(i64::from(max))
                .fetch_all(p)
                .await?;
            for (key,) in keys {
                let n = sqlx::query(&claim)
                    .bind(claimed_by)
                    .bind(claim_until)
                    .bind(key.as_str())
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected();
                if n == 1 {
                    let row: Option<(String, Option<String>, i64)> =
                        sqlx::query_as(&read).bind(key.as_str()).fetch_optional(p).await?;
                    if let Some((key, payload, attempts)) = row {
                        out.push(ClaimedRow { key, payload: payload.unwrap_or_default(), attempts });
                    }
                }
            }
        });
        Ok(out)
    }

    /// Extends this replica's claim; `false` when it was lost.
    pub async fn renew_delivery(
        &self,
        key: &str,
        claimed_by: &str,
        claim_until: i64,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE channel_deliveries SET claim_until = ? \
             WHERE dedupe_key = ? AND claimed_by = ? AND state = 'pending'",
        );
        let n = on_pool!(self.pool(), p, _Db => {
            sqlx::query(&sql).bind(claim_until).bind(key).bind(claimed_by).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Marks a delivery answered; its key stays (for dedupe) until `expires_at`.
    pub async fn finish_delivery(&self, key: &str, expires_at: i64) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE channel_deliveries SET state = 'done', payload = NULL, expires_at = ? \
             WHERE dedupe_key = ?",
        );
        on_pool!(self.pool(), p, _Db => {
            sqlx::query(&sql).bind(expires_at).bind(key).execute(p).await?;
        });
        Ok(())
    }

    /// Gives up this replica's claim at once (draining), so another replica
    /// takes the delivery without waiting for the lease.
    pub async fn release_delivery(&self, key: &str, claimed_by: &str) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE channel_deliveries SET claim_until = 0 \
             WHERE dedupe_key = ? AND claimed_by = ? AND state = 'pending'",
        );
        on_pool!(self.pool(), p, _Db => {
            sqlx::query(&sql).bind(key).bind(claimed_by).execute(p).await?;
        });
        Ok(())
    }

    /// Deletes up to `max_rows` answered or alias keys past their dedupe TTL.
    pub async fn prune_deliveries(&self, now: i64, max_rows: u64) -> Result<u64, StoreError> {
        let sql = self.sql(match self.pool() {
            Pool::MySql(_) => {
                "DELETE FROM channel_deliveries WHERE state <> 'pending' AND expires_at < ? \
                 ORDER BY expires_at LIMIT ?"
            }
            _ => {
                "DELETE FROM channel_deliveries WHERE dedupe_key IN (SELECT dedupe_key FROM \
                 channel_deliveries WHERE state <> 'pending' AND expires_at < ? ORDER BY expires_at LIMIT ?)"
            }
        });
        Ok(on_pool!(self.pool(), p, _Db => {
            sqlx::query(&sql).bind(now).bind(i64::try_from(max_rows).unwrap_or(i64::MAX)).execute(p).await?.rows_affected()
        }))
    }

    /// Deliveries recorded and not yet answered (for tests and diagnostics).
    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        let row: (i64,) = on_pool!(self.pool(), p, _Db => {
            sqlx::query_as("SELECT COUNT(*) FROM channel_deliveries WHERE state = 'pending'")
                .fetch_one(p)
                .await?
        });
        Ok(row.0)
    }
}

fn failed(what: &'static str) -> impl Fn(StoreError) -> QueueError {
    move |e| QueueError(format!("{what}: {e}"))
}

impl SqlDeliveries {
    /// Tables exist before the first use (the store migrates once).
    async fn ready(&self) -> Result<(), QueueError> {
        self.store
            .migrate()
            .await
            .map_err(failed("delivery table not ready"))
    }
}

impl DeliveryStore for SqlDeliveries {
    fn is_shared(&self) -> bool {
        !self.store.is_local()
    }

    fn claims_on_record(&self) -> bool {
        true
    }

    fn recovery_every(&self) -> Duration {
        POLL
    }

    fn prepare(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.ready())
    }

    fn record<'a>(
        &'a self,
        keys: &'a [String],
        payload: &'a str,
        claim_here: bool,
        binding: Option<Binding<'a>>,
    ) -> StoreFuture<'a, Recorded> {
        Box::pin(async move {
            self.ready().await?;
            let now = now_ms();
            let claim_until = if claim_here { now + self.lease_ms } else { now };
            self.writes
                .run(Write::Record {
                    keys: keys.to_vec(),
                    payload: payload.to_owned(),
                    claimed_by: self.replica.clone(),
                    now,
                    claim_until,
                    expires_at: now + self.dedupe_ttl_ms,
                    binding: binding.map(|b| (b.key.to_owned(), now + ms(b.ttl))),
                })
                .await
                .map_err(failed("delivery not recorded"))
        })
    }

    fn read_new(&self, _max: usize) -> StoreFuture<'_, Vec<Claimed>> {
        // New deliveries reach the workers as they are recorded.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn claim_lapsed(&self, max: usize) -> StoreFuture<'_, Vec<Claimed>> {
        Box::pin(async move {
            self.ready().await?;
            let now = now_ms();
            let max = u32::try_from(max).unwrap_or(u32::MAX);
            let rows = self
                .claim_due_deliveries(&self.replica, now, now + self.lease_ms, max)
                .await
                .map_err(failed("cannot claim deliveries"))?;
            Ok(rows
                .into_iter()
                .map(|r| Claimed {
                    key: r.key,
                    payload: r.payload,
                    attempts: r.attempts,
                })
                .collect())
        })
    }

    fn renew<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.renew_delivery(key, &self.replica, now_ms() + self.lease_ms)
                .await
                .map_err(failed("claim not renewed"))
        })
    }

    fn complete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.finish_delivery(key, now_ms() + self.dedupe_ttl_ms)
                .await
                .map_err(failed("delivery not marked answered"))
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.release_delivery(key, &self.replica)
                .await
                .map_err(failed("claim not released"))
        })
    }

    fn prune(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            if !self.store.is_migrated() {
                return Ok(0);
            }
            self.prune_deliveries(now_ms(), PRUNE_BATCH)
                .await
                .map_err(failed("dedupe keys not pruned"))
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.ready().await?;
            self.pending_deliveries()
                .await
                .map(|n| n.max(0) as u64)
                .map_err(failed("cannot count deliveries"))
        })
    }
}
