//! IM deliveries: never lost, answered once.
//!
//! A verified message is recorded durably before the platform gets its ack:
//! in a Redis stream when `redis.url` is set (read by every replica as one
//! consumer group), else in the log database's `channel_deliveries` table.
//! Redeliveries are stopped by dedupe keys (the platform's delivery id and,
//! where it has one, the message id), set in two steps: a short-lived
//! "processing" marker while recording, then "done" for `dedupe_ttl_secs`.
//! Workers answer claimed deliveries through the chat engine; a replica
//! renews its claims while it works, and a claim left to lapse (the replica
//! died) is taken over by another. SIGTERM stops new claims and gives the
//! running answers the drain deadline.

mod redis_queue;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use clawdbot_config::{ChannelsConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use super::{Accepted, Inbound, InboundSink, SinkError, SinkFuture};
use crate::logs::{LogStore, now_ms};
use crate::metrics::Metrics;
use crate::state::AppState;
pub use redis_queue::RedisQueue;

/// What is recorded per delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub inbound: Inbound,
    /// When we received it (ms since the epoch): reply latency counts from here.
    pub received_ms: i64,
}

/// A delivery this replica holds the claim on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The stream entry id (Redis) or the row's dedupe key (SQL).
    pub key: String,
    pub payload: String,
    pub attempts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

enum Queue {
    Redis(RedisQueue),
    Sql {
        store: LogStore,
        /// Tables exist (migrations ran) before the first record.
        ready: OnceCell<()>,
        /// SQLite: records go through one task that commits whatever has
        /// queued up as one transaction (group commit).
        batcher: std::sync::OnceLock<mpsc::Sender<PendingRecord>>,
    },
}

/// A delivery waiting for the SQLite group commit.
struct PendingRecord {
    keys: Vec<String>,
    payload: String,
    claim_until: i64,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Most deliveries in one SQLite transaction.
const MAX_BATCH: usize = 128;

/// Commits queued records in batches: under load each transaction carries
/// many deliveries, alone a delivery waits for nothing but its own commit.
async fn sqlite_group_commit(
    store: LogStore,
    replica: String,
    dedupe_ttl_ms: i64,
    mut rx: mpsc::Receiver<PendingRecord>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<(&[String], &str, i64)> = batch
            .iter()
            .map(|p| (p.keys.as_slice(), p.payload.as_str(), p.claim_until))
            .collect();
        let now = now_ms();
        let result = store
            .record_delivery_batch(&items, &replica, now, now + dedupe_ttl_ms)
            .await;
        match result {
            Ok(fresh) => {
                for (p, f) in batch.drain(..).zip(fresh) {
                    let _ = p.done.send(Ok(f));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(why.clone()));
                }
            }
        }
    }
}

/// The dedupe keys of a message: its delivery id, then its message id.
/// Hashed when long so any platform id fits the key column.
pub fn dedupe_keys(m: &Inbound) -> Vec<String> {
    let p = m.platform.label();
    let mut keys = vec![bounded(format!("{p}:{}", m.delivery_id))];
    if let Some(id) = &m.message_id {
        keys.push(bounded(format!("{p}:m:{id}")));
    }
    keys
}

fn bounded(key: String) -> String {
    if key.len() <= 200 && !key.chars().any(char::is_control) {
        key
    } else {
        format!("h:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// A name for this replica's claims: the pod name when there is one.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bot-runtime".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(80)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

pub struct Deliveries {
    queue: Queue,
    cfg: ChannelsConfig,
    replica: String,
    metrics: prometheus::IntCounterVec,
    /// SQL mode: deliveries this replica recorded (and claimed) go straight
    /// to its workers; lapsed claims are found by polling.
    local_tx: mpsc::Sender<Claimed>,
    local_rx: Mutex<Option<mpsc::Receiver<Claimed>>>,
}

/// Deliveries this replica claims ahead of its workers, per worker: kept
/// small so a claim never waits in the queue anywhere near its lease.
const LOCAL_QUEUE_PER_WORKER: usize = 2;
const SQL_POLL: Duration = Duration::from_secs(2);

impl Deliveries {
    pub fn from_config(cfg: &RuntimeConfig, metrics: &Metrics) -> anyhow::Result<Self> {
        let replica = replica_name();
        let queue = match &cfg.redis.url {
            Some(url) => Queue::Redis(RedisQueue::new(url.expose(), &cfg.redis, replica.clone())?),
            None => Queue::Sql {
                store: LogStore::open_lazy_with(&crate::logs::deliveries_database_url(cfg), 1)?,
                ready: OnceCell::new(),
                batcher: std::sync::OnceLock::new(),
            },
        };
        let (local_tx, local_rx) =
            mpsc::channel(cfg.channels.workers.max(1) * LOCAL_QUEUE_PER_WORKER);
        Ok(Self {
            queue,
            cfg: cfg.channels.clone(),
            replica,
            metrics: metrics.webhook_requests.clone(),
            local_tx,
            local_rx: Mutex::new(Some(local_rx)),
        })
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.claim_lease_secs)
    }

    async fn sql_ready(&self, store: &LogStore, ready: &OnceCell<()>) -> Result<(), QueueError> {
        ready
            .get_or_try_init(|| async {
                store
                    .migrate()
                    .await
                    .map_err(|e| QueueError(format!("delivery table not ready: {e}")))
            })
            .await
            .map(drop)
    }

    /// Dedupes and records one delivery.
    pub async fn record(&self, m: Inbound) -> Result<Accepted, QueueError> {
        let keys = dedupe_keys(&m);
        let delivery = Delivery {
            inbound: m,
            received_ms: now_ms(),
        };
        let payload = serde_json::to_string(&delivery)
            .map_err(|e| QueueError(format!("cannot encode the delivery: {e}")))?;
        let fresh = match &self.queue {
            Queue::Redis(q) => {
                q.record(
                    &keys,
                    &payload,
                    Duration::from_secs(self.cfg.processing_ttl_secs),
                    Duration::from_secs(self.cfg.dedupe_ttl_secs),
                )
                .await?
            }
            Queue::Sql {
                store,
                ready,
                batcher,
            } => {
                self.sql_ready(store, ready).await?;
                let now = now_ms();
                // Room in this replica's short work queue: claim it here.
                // Otherwise record it due at once, for whichever replica's
                // poller gets to it first (no second statement).
                let slot = self.local_tx.clone().try_reserve_owned().ok();
                let claim_until = if slot.is_some() {
                    now + self.lease().as_millis() as i64
                } else {
                    now
                };
                let dedupe_ttl_ms = (self.cfg.dedupe_ttl_secs * 1000) as i64;
                let fresh = if store.is_sqlite() {
                    let tx = batcher.get_or_init(|| {
                        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                        let checkpoints = store.clone();
                        tokio::spawn(async move {
                            checkpoints
                                .checkpoint_loop(Duration::from_millis(500))
                                .await
                        });
                        tokio::spawn(sqlite_group_commit(
                            store.clone(),
                            self.replica.clone(),
                            dedupe_ttl_ms,
                            rx,
                        ));
                        tx
                    });
                    let (done, answer) = oneshot::channel();
                    let pending = PendingRecord {
                        keys: keys.clone(),
                        payload: payload.clone(),
                        claim_until,
                        done,
                    };
                    let gone = || QueueError("delivery recorder stopped".into());
                    tx.send(pending).await.map_err(|_| gone())?;
                    answer
                        .await
                        .map_err(|_| gone())?
                        .map_err(|e| QueueError(format!("delivery not recorded: {e}")))?
                } else {
                    store
                        .record_delivery(
                            &keys,
                            &payload,
                            &self.replica,
                            now,
                            claim_until,
                            now + dedupe_ttl_ms,
                        )
                        .await
                        .map_err(|e| QueueError(format!("delivery not recorded: {e}")))?
                };
                if fresh && let Some(slot) = slot {
                    slot.send(Claimed {
                        key: keys[0].clone(),
                        payload,
                        attempts: 1,
                    });
                }
                fresh
            }
        };
        Ok(if fresh {
            Accepted::New
        } else {
            Accepted::Duplicate
        })
    }

    /// Runs the workers until the server starts draining, then gives the answers in
    /// progress until `drain_deadline` and returns.
    pub async fn run(self: Arc<Self>, st: AppState, drain_deadline: Duration) {
        let slots = Arc::new(Semaphore::new(self.cfg.workers));
        let mut local = self.local_rx.lock().await.take();
        let mut tasks = JoinSet::new();
        let mut last_recovery = tokio::time::Instant::now() - self.lease();
        if let Queue::Redis(q) = &self.queue {
            while let Err(e) = q.ensure_group().await {
                tracing::warn!(error = %e, "delivery stream not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = st.drain.started() => return,
                }
            }
        }
        loop {
            if st.drain.is_draining() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = st.drain.started() => {}
                }
                continue;
            }
            let batch = tokio::select! {
                b = self.next_batch(free, &mut local, &mut last_recovery) => b,
                _ = st.drain.started() => continue,
            };
            for claimed in batch {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    self.release(&claimed).await;
                    continue;
                };
                let me = self.clone();
                let st = st.clone();
                tasks.spawn(async move {
                    me.work(&st, claimed).await;
                    drop(permit);
                });
            }
        }
        // Draining: recorded deliveries not yet started go back to the
        // queue for another replica (or this one's next start).
        if let Some(rx) = local.as_mut() {
            rx.close();
            while let Ok(c) = rx.try_recv() {
                self.release(&c).await;
            }
        }
        let running = tasks.len();
        if running > 0 {
            tracing::info!(running, "waiting for IM answers in progress");
        }
        if tokio::time::timeout(drain_deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "drain deadline passed with IM answers in progress; another replica will take them over"
            );
            tasks.abort_all();
        }
    }

    /// Up to `max` deliveries to answer: newly recorded ones first, then,
    /// every so often, claims that lapsed.
    async fn next_batch(
        &self,
        max: usize,
        local: &mut Option<mpsc::Receiver<Claimed>>,
        last_recovery: &mut tokio::time::Instant,
    ) -> Vec<Claimed> {
        let recovery_every = match self.queue {
            Queue::Redis(_) => self.lease() / 2,
            Queue::Sql { .. } => SQL_POLL,
        };
        if last_recovery.elapsed() >= recovery_every {
            *last_recovery = tokio::time::Instant::now();
            let found = self.claim_lapsed(max).await;
            if !found.is_empty() {
                return found;
            }
        }
        match &self.queue {
            Queue::Redis(q) => match q.read_new(max).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the delivery stream");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Vec::new()
                }
            },
            Queue::Sql { .. } => {
                let Some(rx) = local.as_mut() else {
                    tokio::time::sleep(SQL_POLL).await;
                    return Vec::new();
                };
                match tokio::time::timeout(SQL_POLL, rx.recv()).await {
                    Ok(Some(first)) => {
                        let mut b = vec![first];
                        while b.len() < max {
                            match rx.try_recv() {
                                Ok(c) => b.push(c),
                                Err(_) => break,
                            }
                        }
                        b
                    }
                    Ok(None) | Err(_) => Vec::new(),
                }
            }
        }
    }

    async fn claim_lapsed(&self, max: usize) -> Vec<Claimed> {
        let r = match &self.queue {
            Queue::Redis(q) => q.claim_stale(self.lease(), max).await,
            Queue::Sql { store, ready, .. } => {
                if ready.get().is_none() && self.sql_ready(store, ready).await.is_err() {
                    return Vec::new();
                }
                let now = now_ms();
                store
                    .claim_due_deliveries(
                        &self.replica,
                        now,
                        now + self.lease().as_millis() as i64,
                        max as u32,
                    )
                    .await
                    .map(|rows| {
                        rows.into_iter()
                            .map(|r| Claimed {
                                key: r.key,
                                payload: r.payload,
                                attempts: r.attempts,
                            })
                            .collect()
                    })
                    .map_err(|e| QueueError(e.to_string()))
            }
        };
        match r {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::info!(
                        count = found.len(),
                        "took over IM deliveries whose claim lapsed"
                    );
                }
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for lapsed IM deliveries");
                Vec::new()
            }
        }
    }

    /// Answers one delivery, renewing the claim while it works, then marks
    /// it done. A payload that cannot be read is dropped with a log line:
    /// retrying it could never succeed.
    async fn work(&self, st: &AppState, claimed: Claimed) {
        // SQL: confirm the claim is still ours (it may have lapsed while
        // queued, and been taken by another replica).
        if let Queue::Sql { store, .. } = &self.queue {
            let until = now_ms() + self.lease().as_millis() as i64;
            match store
                .renew_delivery(&claimed.key, &self.replica, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("IM delivery claimed elsewhere meanwhile; skipped");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot confirm an IM delivery claim; left for later");
                    return;
                }
            }
        }
        let delivery: Delivery = match serde_json::from_str(&claimed.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "unreadable IM delivery record dropped");
                self.finish(&claimed).await;
                return;
            }
        };
        let gauge = &st.metrics.channel_deliveries_in_flight;
        gauge.inc();
        let renew_every = self.lease() / 3;
        let answer = worker::answer(st, &delivery);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                _ = &mut answer => break,
                _ = tokio::time::sleep(renew_every) => self.renew(&claimed).await,
            }
        }
        gauge.dec();
        self.finish(&claimed).await;
    }

    async fn renew(&self, c: &Claimed) {
        let r = match &self.queue {
            Queue::Redis(q) => q.renew(&c.key).await,
            Queue::Sql { store, .. } => {
                let until = now_ms() + self.lease().as_millis() as i64;
                match store.renew_delivery(&c.key, &self.replica, until).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(QueueError("claim lost".into())),
                    Err(e) => Err(QueueError(e.to_string())),
                }
            }
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot renew an IM delivery claim");
        }
    }

    async fn finish(&self, c: &Claimed) {
        // A failed finish leaves the delivery to be answered again after
        // the lease: retry a few times before accepting that.
        for attempt in 0..5u32 {
            let r = match &self.queue {
                Queue::Redis(q) => q.finish(&c.key).await,
                Queue::Sql { store, .. } => store
                    .finish_delivery(&c.key, now_ms() + (self.cfg.dedupe_ttl_secs * 1000) as i64)
                    .await
                    .map_err(|e| QueueError(e.to_string())),
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot mark an IM delivery answered");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    async fn release(&self, c: &Claimed) {
        match &self.queue {
            // A read entry stays in this replica's pending list; another
            // replica claims it once idle past the lease.
            Queue::Redis(_) => {}
            Queue::Sql { store, .. } => {
                if let Err(e) = store.release_delivery(&c.key, &self.replica).await {
                    tracing::warn!(error = %e, "cannot release an IM delivery claim");
                }
            }
        }
    }

    /// Deletes dedupe keys past their TTL (SQL; Redis expires its own).
    pub async fn prune(&self) {
        if let Queue::Sql { store, ready, .. } = &self.queue
            && ready.get().is_some()
        {
            loop {
                match store.prune_deliveries(now_ms(), 1000).await {
                    Ok(n) if n >= 1000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prune IM dedupe keys");
                        break;
                    }
                }
            }
        }
    }

    /// Deliveries recorded and not yet answered.
    pub async fn pending(&self) -> Result<u64, QueueError> {
        match &self.queue {
            Queue::Redis(q) => q.len().await,
            Queue::Sql { store, ready, .. } => {
                self.sql_ready(store, ready).await?;
                store
                    .pending_deliveries()
                    .await
                    .map(|n| n.max(0) as u64)
                    .map_err(|e| QueueError(e.to_string()))
            }
        }
    }
}

impl InboundSink for Deliveries {
    fn accept(&self, message: Inbound) -> SinkFuture<'_> {
        Box::pin(async move {
            let channel = message.platform.label();
            let r = self.record(message).await;
            let outcome = match &r {
                Ok(Accepted::New) => "accepted",
                Ok(Accepted::Duplicate) => "duplicate",
                Err(_) => "unavailable",
            };
            self.metrics.with_label_values(&[channel, outcome]).inc();
            r.map_err(|e| {
                tracing::warn!(channel, error = %e, "IM delivery not recorded; the platform will retry");
                SinkError(e.0)
            })
        })
    }
}
