//! IM deliveries: never lost, answered once.
//!
//! A verified message is recorded durably before the platform gets its ack,
//! in a [`DeliveryStore`]: a Redis stream when `redis.url` is set (read by
//! every replica as one consumer group, `redis.rs`), else the
//! `channel_deliveries` table of the log database, through the same sqlx
//! pool as the conversation logs (`sql.rs`): shared by replicas on
//! PostgreSQL or MySQL, this replica's own on the embedded SQLite file.
//! Redeliveries are stopped by dedupe keys (the platform's delivery id and,
//! where it has one, the message id).
//! Workers (`workers.rs`) answer claimed deliveries through the chat engine
//! (`answer.rs`); a replica renews its claims while it works, and a claim
//! left to lapse (the replica died) is taken over by another. SIGTERM stops
//! new claims; until the drain deadline, a shared store's replica finishes
//! the answers running and hands the rest back, and a replica on its own
//! file answers all it holds, since no other replica can.

mod answer;
mod payload;
mod redis;
mod sql;
mod sql_writes;
mod workers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use clawdbot_config::{ChannelsConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use crate::convlog::LogStore;
use crate::crypto::Keyring;
use crate::im::{Accepted, Inbound, InboundSink, SignatureBinding, SinkError, SinkFuture};
use crate::support::timefmt::now_ms;
use crate::telemetry::metrics::Metrics;
pub use answer::{Answerer, session_id};
pub use redis::RedisQueue;
pub use sql::{ClaimedRow, SqlDeliveries};

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

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// A key was known: nothing written.
    Duplicate,
    /// The signature binding belongs to another message: nothing written.
    Replayed,
}

/// A signature to bind to the recorded delivery (its own key) in the same
/// step: `key` for `ttl`.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub key: &'a str,
    pub ttl: Duration,
}

/// Where deliveries are kept until answered. Every method may be retried;
/// the workers and the webhook path use nothing else.
pub trait DeliveryStore: Send + Sync {
    /// Whether other replicas read this store too (Redis, a database
    /// server) rather than it being this replica's own file.
    fn is_shared(&self) -> bool;
    /// Whether a new delivery can be claimed by this replica in the same
    /// step that records it (SQL); otherwise workers read new deliveries
    /// with [`DeliveryStore::read_new`] (the Redis stream).
    fn claims_on_record(&self) -> bool;
    /// How often lapsed claims are looked for.
    fn recovery_every(&self) -> Duration;
    /// Gets the store ready (tables, consumer group); idempotent.
    fn prepare(&self) -> StoreFuture<'_, ()>;
    /// Records `payload` under `keys` (its own key first, then aliases)
    /// unless any key is known (a duplicate, nothing written).
    /// `claim_here`: claimed by this replica for a lease (else due at
    /// once). `binding`: first bound to the delivery's own key unless
    /// bound to another already (then `Replayed`, nothing written).
    fn record<'a>(
        &'a self,
        keys: &'a [String],
        payload: &'a str,
        claim_here: bool,
        binding: Option<Binding<'a>>,
    ) -> StoreFuture<'a, Recorded>;
    /// Up to `max` new deliveries for this replica (waits a little when
    /// there are none).
    fn read_new(&self, max: usize) -> StoreFuture<'_, Vec<Claimed>>;
    /// Up to `max` deliveries whose claim lapsed, now this replica's.
    fn claim_lapsed(&self, max: usize) -> StoreFuture<'_, Vec<Claimed>>;
    /// Extends this replica's claim; `false` when it was lost.
    fn renew<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Answered: done (its keys keep deduping for the dedupe TTL).
    fn complete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// Gives the claim back at once, for another replica.
    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// Deletes one batch of expired dedupe keys: how many.
    fn prune(&self) -> StoreFuture<'_, u64>;
    /// Deliveries recorded and not yet answered.
    fn pending(&self) -> StoreFuture<'_, u64>;
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
    store: Box<dyn DeliveryStore>,
    cfg: ChannelsConfig,
    metrics: prometheus::IntCounterVec,
    /// Stores that claim on record: deliveries this replica recorded (and
    /// claimed) go straight to its workers; lapsed claims are found by
    /// polling.
    local_tx: mpsc::Sender<Claimed>,
    local_rx: Mutex<Option<mpsc::Receiver<Claimed>>>,
    /// Seals stored payloads (a no-op with encryption off).
    keyring: Arc<Keyring>,
}

/// Deliveries this replica claims ahead of its workers, per worker: kept
/// small so a claim never waits in the queue anywhere near its lease.
const LOCAL_QUEUE_PER_WORKER: usize = 2;

impl Deliveries {
    /// `store`: the log database's store (its pool is shared, not a second
    /// one), used unless Redis is configured.
    pub fn from_config(
        cfg: &RuntimeConfig,
        metrics: &Metrics,
        store: LogStore,
        keyring: Arc<Keyring>,
    ) -> anyhow::Result<Self> {
        let replica = replica_name();
        let store: Box<dyn DeliveryStore> = match &cfg.redis.url {
            Some(url) => {
                Box::new(RedisQueue::new(url.expose(), &cfg.redis, replica)?.timing(&cfg.channels))
            }
            None => Box::new(SqlDeliveries::new(store, replica, &cfg.channels)),
        };
        let (local_tx, local_rx) =
            mpsc::channel(cfg.channels.workers.max(1) * LOCAL_QUEUE_PER_WORKER);
        Ok(Self {
            store,
            cfg: cfg.channels.clone(),
            metrics: metrics.webhook_requests.clone(),
            local_tx,
            local_rx: Mutex::new(Some(local_rx)),
            keyring,
        })
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.claim_lease_secs)
    }

    /// Dedupes and records one delivery, with its signature bound to it
    /// when it has one to bind (shared by every replica).
    pub async fn record(
        &self,
        m: Inbound,
        signature: Option<SignatureBinding>,
    ) -> Result<Accepted, QueueError> {
        let keys = dedupe_keys(&m);
        let sig_key = signature
            .as_ref()
            .map(|s| bounded(format!("sig:{}", s.key)));
        let binding = signature
            .as_ref()
            .zip(sig_key.as_deref())
            .map(|(s, key)| Binding { key, ttl: s.ttl });
        let delivery = Delivery {
            inbound: m,
            received_ms: now_ms(),
        };
        let payload = payload::seal(&self.keyring, &keys[0], &delivery).map_err(QueueError)?;
        // Room in this replica's short work queue: the delivery is claimed
        // here. Otherwise it is recorded due at once, for whichever
        // replica's poller gets to it first (no second statement).
        let slot = if self.store.claims_on_record() {
            self.local_tx.clone().try_reserve_owned().ok()
        } else {
            None
        };
        match self
            .store
            .record(&keys, &payload, slot.is_some(), binding)
            .await?
        {
            Recorded::New => {}
            Recorded::Duplicate => return Ok(Accepted::Duplicate),
            Recorded::Replayed => return Ok(Accepted::Replayed),
        }
        if let Some(slot) = slot {
            slot.send(Claimed {
                key: keys[0].clone(),
                payload,
                attempts: 1,
            });
        }
        Ok(Accepted::New)
    }

    /// Deletes dedupe keys past their TTL (SQL; Redis expires its own).
    pub async fn prune(&self) {
        loop {
            match self.store.prune().await {
                Ok(n) if n >= sql::PRUNE_BATCH => continue,
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
        self.store.pending().await
    }
}

impl Deliveries {
    /// Records and counts the outcome (`clawdbot_webhook_requests_total`).
    async fn accept_counted(
        &self,
        message: Inbound,
        signature: Option<SignatureBinding>,
    ) -> Result<Accepted, SinkError> {
        let channel = message.platform.label();
        let r = self.record(message, signature).await;
        let outcome = match &r {
            Ok(Accepted::New) => "accepted",
            Ok(Accepted::Duplicate) => "duplicate",
            Ok(Accepted::Replayed) => "replayed",
            Err(_) => "unavailable",
        };
        self.metrics.with_label_values(&[channel, outcome]).inc();
        r.map_err(|e| {
            tracing::warn!(channel, error = %e, "IM delivery not recorded; the platform will retry");
            SinkError(e.0)
        })
    }
}

impl InboundSink for Deliveries {
    fn accept(&self, message: Inbound) -> SinkFuture<'_> {
        Box::pin(self.accept_counted(message, None))
    }

    fn accept_signed(&self, message: Inbound, binding: SignatureBinding) -> SinkFuture<'_> {
        Box::pin(self.accept_counted(message, Some(binding)))
    }
}
