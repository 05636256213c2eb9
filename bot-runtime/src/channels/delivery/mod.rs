//! IM deliveries: never lost, answered once.
//!
//! A verified message is recorded durably before the platform gets its ack:
//! in a Redis stream when `redis.url` is set (read by every replica as one
//! consumer group), else in the `channel_deliveries` table of the log
//! database, through the same sqlx pool as the conversation logs: shared by
//! replicas on PostgreSQL or MySQL, this replica's own on the embedded
//! SQLite file.
//! Redeliveries are stopped by dedupe keys (the platform's delivery id and,
//! where it has one, the message id), set in two steps: a short-lived
//! "processing" marker while recording, then "done" for `dedupe_ttl_secs`.
//! Workers answer claimed deliveries through the chat engine; a replica
//! renews its claims while it works, and a claim left to lapse (the replica
//! died) is taken over by another. SIGTERM stops new claims; until the
//! drain deadline, a shared queue's replica finishes the answers running
//! and hands the rest back, and a replica on its own file answers all it
//! holds, since no other replica can.

mod redis_queue;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use clawdbot_config::{ChannelsConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Accepted, Inbound, InboundSink, SinkError, SinkFuture};
use crate::logs::{ClaimedRow, LogStore, now_ms};
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

impl From<ClaimedRow> for Claimed {
    fn from(r: ClaimedRow) -> Self {
        Self {
            key: r.key,
            payload: r.payload,
            attempts: r.attempts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

enum Queue {
    Redis(RedisQueue),
    /// The log database: a server (PostgreSQL / MySQL) shared by replicas,
    /// or this replica's own SQLite file (`local`).
    Sql {
        store: LogStore,
        local: bool,
    },
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
/// Expired dedupe keys deleted per statement.
const PRUNE_BATCH: u32 = 1000;

impl Deliveries {
    /// `store`: the log database's store (its pool is shared, not a second one).
    pub fn from_config(
        cfg: &RuntimeConfig,
        metrics: &Metrics,
        store: LogStore,
    ) -> anyhow::Result<Self> {
        let replica = replica_name();
        let queue = match &cfg.redis.url {
            Some(url) => Queue::Redis(RedisQueue::new(url.expose(), &cfg.redis, replica.clone())?),
            None => Queue::Sql {
                local: store.is_local(),
                store,
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

    /// Tables exist before the first record (the store migrates once).
    async fn sql_ready(&self, store: &LogStore) -> Result<(), QueueError> {
        store
            .migrate()
            .await
            .map_err(|e| QueueError(format!("delivery table not ready: {e}")))
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
            Queue::Sql { store, .. } => {
                self.sql_ready(store).await?;
                let now = now_ms();
                let (slot, claim_until) = self.local_slot(now);
                let fresh = store
                    .record_delivery(
                        &keys,
                        &payload,
                        &self.replica,
                        now,
                        claim_until,
                        now + (self.cfg.dedupe_ttl_secs * 1000) as i64,
                    )
                    .await
                    .map_err(|e| QueueError(format!("delivery not recorded: {e}")))?;
                self.hand_over(fresh, slot, &keys[0], payload);
                fresh
            }
        };
        Ok(if fresh {
            Accepted::New
        } else {
            Accepted::Duplicate
        })
    }

    /// Binds a signed callback's credentials (`key`, e.g. DingTalk's
    /// timestamp and sign) to the first message they carried, for `ttl`,
    /// shared by every replica: `false` when they came with another
    /// message before (a replay with a new body).
    pub async fn bind_signature(
        &self,
        key: &str,
        message: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let key = bounded(format!("sig:{key}"));
        match &self.queue {
            Queue::Redis(q) => q.bind(&key, message, ttl).await,
            Queue::Sql { store, .. } => {
                self.sql_ready(store).await?;
                let now = now_ms();
                store
                    .bind_delivery_key(&key, message, now, now + ttl.as_millis() as i64)
                    .await
                    .map_err(|e| QueueError(format!("signature not recorded: {e}")))
            }
        }
    }

    /// Room in this replica's short work queue: the delivery is claimed
    /// here. Otherwise it is recorded due at once, for whichever replica's
    /// poller gets to it first (no second statement).
    fn local_slot(&self, now: i64) -> (Option<mpsc::OwnedPermit<Claimed>>, i64) {
        match self.local_tx.clone().try_reserve_owned() {
            Ok(slot) => (Some(slot), now + self.lease().as_millis() as i64),
            Err(_) => (None, now),
        }
    }

    /// A new delivery claimed here goes straight to this replica's workers.
    fn hand_over(
        &self,
        fresh: bool,
        slot: Option<mpsc::OwnedPermit<Claimed>>,
        key: &str,
        payload: String,
    ) {
        if fresh && let Some(slot) = slot {
            slot.send(Claimed {
                key: key.to_owned(),
                payload,
                attempts: 1,
            });
        }
    }

    /// Runs the workers until the server starts draining, then, until
    /// `drain_deadline`: on a shared queue, finishes the answers in progress
    /// and hands the rest back; on this replica's own file, answers its
    /// whole backlog.
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
                self.start_work(&st, &slots, &mut tasks, claimed).await;
            }
        }
        let deadline = tokio::time::Instant::now() + drain_deadline;
        // Nothing new reaches the local queue from here on: records made
        // while draining (a long connection's last frames) are left due.
        if let Some(rx) = local.as_mut() {
            rx.close();
        }
        if let Queue::Sql {
            store, local: true, ..
        } = &self.queue
        {
            // This replica's own file: no other replica can answer what it
            // holds, so the drain answers its backlog, not just the work
            // in progress.
            self.answer_backlog(store, &st, &slots, local.as_mut(), &mut tasks, deadline)
                .await;
            self.finish_running(&mut tasks, deadline).await;
            match self.pending().await {
                Ok(0) => {}
                Ok(left) => tracing::warn!(
                    left,
                    "drain deadline passed with IM deliveries unanswered; they stay in the deliveries \
                     file and are answered on the next start with this data_dir"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot count unanswered IM deliveries"),
            }
            return;
        }
        // A shared queue: deliveries not yet started go back to it for
        // another replica (or this one's next start) at once.
        if let Some(rx) = local.as_mut() {
            while let Ok(c) = rx.try_recv() {
                self.release(&c).await;
            }
        }
        self.finish_running(&mut tasks, deadline).await;
    }

    /// Runs one claimed delivery on a free worker; without one the claim
    /// is given back.
    async fn start_work(
        self: &Arc<Self>,
        st: &AppState,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        claimed: Claimed,
    ) {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            self.release(&claimed).await;
            return;
        };
        let me = self.clone();
        let st = st.clone();
        tasks.spawn(async move {
            me.work(&st, claimed).await;
            drop(permit);
        });
    }

    /// Draining on the replica's own file: answers what its local queue
    /// still holds, then the file's due rows, a worker's worth at a time,
    /// until none are left or the deadline passes.
    async fn answer_backlog(
        self: &Arc<Self>,
        store: &LogStore,
        st: &AppState,
        slots: &Arc<Semaphore>,
        mut local: Option<&mut mpsc::Receiver<Claimed>>,
        tasks: &mut JoinSet<()>,
        deadline: tokio::time::Instant,
    ) {
        let mut announced = false;
        loop {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            let mut batch = Vec::with_capacity(free);
            if let Some(rx) = local.as_deref_mut() {
                while batch.len() < free {
                    let Ok(c) = rx.try_recv() else { break };
                    batch.push(c);
                }
            }
            if batch.len() < free {
                let now = now_ms();
                let until = now + self.lease().as_millis() as i64;
                match store
                    .claim_due_deliveries(&self.replica, now, until, (free - batch.len()) as u32)
                    .await
                {
                    Ok(rows) => batch.extend(rows.into_iter().map(Claimed::from)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the IM delivery backlog"),
                }
            }
            if batch.is_empty() && tasks.is_empty() {
                return;
            }
            if !announced {
                announced = true;
                tracing::info!("draining: answering the IM deliveries this replica holds");
            }
            for claimed in batch {
                self.start_work(st, slots, tasks, claimed).await;
            }
            if tokio::time::timeout_at(deadline, tasks.join_next())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Gives the answers in progress until `deadline`; the rest are cut
    /// off, and their claims lapse for whoever reads the queue next.
    async fn finish_running(&self, tasks: &mut JoinSet<()>, deadline: tokio::time::Instant) {
        let running = tasks.len();
        if running > 0 {
            tracing::info!(running, "waiting for IM answers in progress");
        }
        if tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "drain deadline passed with IM answers in progress; their claims lapse for the next reader"
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
            Queue::Sql { store, .. } => {
                if self.sql_ready(store).await.is_err() {
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
                    .map(|rows| rows.into_iter().map(Claimed::from).collect())
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
        if !matches!(self.queue, Queue::Redis(_)) {
            match self.renew_claim(&claimed.key).await {
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
        match self.renew_claim(&c.key).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("cannot renew an IM delivery claim: claim lost"),
            Err(e) => tracing::warn!(error = %e, "cannot renew an IM delivery claim"),
        }
    }

    /// Extends the claim; `false` when it is no longer ours (SQL: another replica
    /// took it over; Redis claims cannot be lost that way).
    async fn renew_claim(&self, key: &str) -> Result<bool, QueueError> {
        let until = now_ms() + self.lease().as_millis() as i64;
        match &self.queue {
            Queue::Redis(q) => q.renew(key).await.map(|()| true),
            Queue::Sql { store, .. } => store
                .renew_delivery(key, &self.replica, until)
                .await
                .map_err(|e| QueueError(e.to_string())),
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
        loop {
            let r = match &self.queue {
                Queue::Redis(_) => return,
                Queue::Sql { store, .. } => {
                    if !store.is_migrated() {
                        return;
                    }
                    store
                        .prune_deliveries(now_ms(), PRUNE_BATCH)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match r {
                Ok(n) if n >= u64::from(PRUNE_BATCH) => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune IM dedupe keys");
                    return;
                }
            }
        }
    }

    /// Deliveries recorded and not yet answered.
    pub async fn pending(&self) -> Result<u64, QueueError> {
        match &self.queue {
            Queue::Redis(q) => q.len().await,
            Queue::Sql { store, .. } => {
                self.sql_ready(store).await?;
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
