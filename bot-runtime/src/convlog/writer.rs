//! The batched log writer. Handlers `submit` an exchange before the client
//! gets its final reply; one worker task writes batches (by size or time)
//! with retries, and spills to the local file whenever the database cannot
//! keep up, so an acknowledged exchange is always either in the database,
//! in the queue, or fsynced in the spill file.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clawdbot_config::LogsConfig;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::spill::{Spill, SpillReader};
use super::{Exchange, LogStore};
use crate::crypto::Keyring;

/// How long a submit waits for room in a full queue before spilling:
/// backpressure slows a burst down a little instead of growing memory.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(50);
/// Attempts at one batch before it is spilled and the writer turns to
/// probing the database instead.
const ATTEMPTS_BEFORE_SPILL: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on one batch write: a database that stops answering mid-statement
/// (a black-holed connection) must not hold the queue, or the drain, for
/// the minutes TCP takes to notice. A write that commits after its timeout
/// is harmless: the spilled copy is skipped on replay.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct WriterMetrics {
    pub queue_depth: IntGauge,
    pub write_failures: IntCounter,
    pub spilled: IntCounter,
}

enum Msg {
    Exchange(Box<Exchange>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

struct Shared {
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    stop: Mutex<Option<oneshot::Sender<Instant>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    accepting: AtomicBool,
    spill: Arc<Spill>,
    store: LogStore,
    metrics: WriterMetrics,
    keyring: Arc<Keyring>,
    batch_size: usize,
    flush_interval: Duration,
    max_backoff: Duration,
}

impl LogWriter {
    /// A writer that queues at once; the worker starts with `start`.
    pub fn new(store: LogStore, spill: Spill, cfg: &LogsConfig, metrics: WriterMetrics) -> Self {
        Self::encrypting(store, spill, cfg, metrics, Arc::new(Keyring::off()))
    }

    /// As `new`, sealing each exchange's text with `keyring`'s active key
    /// before it is queued, so the queue, the spill file and the database
    /// only ever hold ciphertext.
    pub fn encrypting(
        store: LogStore,
        spill: Spill,
        cfg: &LogsConfig,
        metrics: WriterMetrics,
        keyring: Arc<Keyring>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        Self(Arc::new(Shared {
            tx,
            rx: Mutex::new(Some(rx)),
            stop: Mutex::new(None),
            task: Mutex::new(None),
            accepting: AtomicBool::new(true),
            spill: Arc::new(spill),
            store,
            metrics,
            keyring,
            batch_size: cfg.batch_size.max(1),
            flush_interval: Duration::from_millis(cfg.flush_interval_ms.max(1)),
            max_backoff: Duration::from_millis(cfg.max_retry_backoff_ms.max(50)),
        }))
    }

    pub fn store(&self) -> &LogStore {
        &self.0.store
    }

    /// The keys stored text is read with.
    pub fn keyring(&self) -> &Keyring {
        &self.0.keyring
    }

    /// Starts the worker (once): migrations, spill replay, then batches.
    pub fn start(&self) {
        let Some(rx) = lock(&self.0.rx).take() else {
            return;
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        *lock(&self.0.stop) = Some(stop_tx);
        let worker = Worker {
            sh: self.0.clone(),
            healthy: false,
            backoff: FIRST_BACKOFF,
            next_probe: Instant::now(),
            deadline: None,
        };
        *lock(&self.0.task) = Some(tokio::spawn(worker.run(rx, stop_rx)));
    }

    /// Hands an exchange to the writer. Returns once it is queued or, when
    /// the queue stays full or the writer is draining, fsynced to the spill
    /// file, so the caller may then acknowledge it to the client.
    pub async fn submit(&self, ex: Exchange) {
        let sh = &self.0;
        let ex = ex.sealed(&sh.keyring);
        if sh.accepting.load(Ordering::SeqCst) {
            let permit = match sh.tx.try_reserve() {
                Ok(p) => Some(p),
                Err(mpsc::error::TrySendError::Full(())) => {
                    tokio::time::timeout(BACKPRESSURE_WAIT, sh.tx.reserve())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                Err(mpsc::error::TrySendError::Closed(())) => None,
            };
            if let Some(p) = permit {
                sh.metrics.queue_depth.inc();
                p.send(Msg::Exchange(Box::new(ex)));
                return;
            }
        }
        spill(sh, vec![ex]).await;
    }

    /// Waits (up to `wait`) until everything submitted before the call is
    /// written or spilled: read-your-writes for the messages endpoint.
    pub async fn flush(&self, wait: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout(wait, self.0.tx.send(Msg::Flush(tx))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
        matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(())))
    }

    /// Stops accepting, writes what is queued until `deadline`, spills the
    /// rest, and waits for the worker to finish.
    pub async fn drain(&self, deadline: Duration) {
        let sh = &self.0;
        sh.accepting.store(false, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        if let Some(stop) = lock(&sh.stop).take() {
            let _ = stop.send(until);
        }
        let task = lock(&sh.task).take();
        match task {
            Some(task) => {
                // The worker spills at the deadline; the extra second covers
                // that last fsync.
                if tokio::time::timeout_at(until + Duration::from_secs(1), task)
                    .await
                    .is_err()
                {
                    tracing::error!("log writer did not finish its drain in time");
                }
            }
            None => {
                // Never started: whatever was queued goes to the spill file.
                let rx = lock(&sh.rx).take();
                if let Some(mut rx) = rx {
                    rx.close();
                    let mut left = Vec::new();
                    while let Ok(m) = rx.try_recv() {
                        if let Msg::Exchange(e) = m {
                            sh.metrics.queue_depth.dec();
                            left.push(*e);
                        }
                    }
                    spill(sh, left).await;
                }
            }
        }
        sh.store.close().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends to the spill file off the async threads. Losing the batch is
/// only possible when the local disk fails too, and is logged loudly.
async fn spill(sh: &Shared, batch: Vec<Exchange>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let file = sh.spill.clone();
    let result = tokio::task::spawn_blocking(move || file.append(&batch)).await;
    match result {
        Ok(Ok(())) => sh.metrics.spilled.inc_by(n),
        Ok(Err(e)) => tracing::error!(
            exchanges = n,
            file = %sh.spill.path().display(),
            error = %e,
            "cannot write the log spill file; exchanges lost"
        ),
        Err(e) => tracing::error!(exchanges = n, error = %e, "log spill task failed"),
    }
}

struct Worker {
    sh: Arc<Shared>,
    /// Migrated and answering; when false, batches go to the spill file and
    /// the database is probed every `backoff`.
    healthy: bool,
    backoff: Duration,
    next_probe: Instant,
    /// Set once draining: the moment everything left is spilled.
    deadline: Option<Instant>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut stop: oneshot::Receiver<Instant>) {
        self.probe().await;
        loop {
            let mut batch = Vec::new();
            let mut flushers = Vec::new();
            let first = tokio::select! {
                biased;
                d = &mut stop, if self.deadline.is_none() => {
                    // A dropped sender (writer gone) drains at once.
                    self.deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                    rx.close();
                    continue;
                }
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(self.next_probe), if !self.healthy && self.deadline.is_none() => {
                    self.probe().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            self.take(first, &mut batch, &mut flushers);
            let until = Instant::now() + self.sh.flush_interval;
            while batch.len() < self.sh.batch_size && flushers.is_empty() {
                let m = if self.deadline.is_some() {
                    rx.try_recv().ok()
                } else {
                    tokio::select! {
                        m = rx.recv() => m,
                        _ = tokio::time::sleep_until(until) => None,
                    }
                };
                match m {
                    Some(m) => self.take(m, &mut batch, &mut flushers),
                    None => break,
                }
            }
            self.write(batch).await;
            for f in flushers {
                let _ = f.send(());
            }
            if self.healthy
                && self.deadline.is_none()
                && self.sh.spill.pending()
                && rx.len() < self.sh.batch_size
            {
                self.replay().await;
            }
        }
        tracing::info!("log writer drained");
    }

    fn take(&self, m: Msg, batch: &mut Vec<Exchange>, flushers: &mut Vec<oneshot::Sender<()>>) {
        match m {
            Msg::Exchange(e) => {
                self.sh.metrics.queue_depth.dec();
                batch.push(*e);
            }
            Msg::Flush(f) => flushers.push(f),
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Writes with retries; spills when the database keeps failing, when it
    /// is known to be down, or when the drain deadline has passed.
    async fn write(&mut self, batch: Vec<Exchange>) {
        if batch.is_empty() {
            return;
        }
        if !self.healthy || self.past_deadline() {
            spill(&self.sh, batch).await;
            return;
        }
        let mut pause = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS_BEFORE_SPILL {
            let limit = match self.deadline {
                Some(d) => WRITE_TIMEOUT.min(d.saturating_duration_since(Instant::now())),
                None => WRITE_TIMEOUT,
            };
            let result = tokio::time::timeout(limit, self.sh.store.insert_batch(&batch))
                .await
                .unwrap_or_else(|_| Err(super::StoreError::Timeout));
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.sh.metrics.write_failures.inc();
                    tracing::warn!(
                        database = self.sh.store.target(),
                        exchanges = batch.len(),
                        attempt,
                        error = %e,
                        "conversation log write failed"
                    );
                }
            }
            if attempt == ATTEMPTS_BEFORE_SPILL {
                break;
            }
            let nap = jitter(pause);
            if let Some(d) = self.deadline
                && Instant::now() + nap >= d
            {
                break;
            }
            tokio::time::sleep(nap).await;
            pause = (pause * 2).min(self.sh.max_backoff);
        }
        self.mark_down();
        spill(&self.sh, batch).await;
    }

    fn mark_down(&mut self) {
        if self.healthy {
            tracing::warn!(
                database = self.sh.store.target(),
                spill_file = %self.sh.spill.path().display(),
                "conversation log database failing; spilling to the local file until it answers"
            );
        }
        self.healthy = false;
        self.backoff = FIRST_BACKOFF;
        self.next_probe = Instant::now() + jitter(self.backoff);
    }

    /// Migrates (idempotent) and checks the database; on success replays
    /// the spill file, else schedules the next probe with a longer pause.
    async fn probe(&mut self) {
        let result = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.sh.store.migrate().await?;
            self.sh.store.ping().await
        })
        .await
        .unwrap_or(Err(super::StoreError::Timeout));
        match result {
            Ok(()) => {
                if !self.healthy {
                    tracing::info!(
                        database = self.sh.store.target(),
                        "conversation log database ready"
                    );
                }
                self.healthy = true;
                self.replay().await;
            }
            Err(e) => {
                self.sh.metrics.write_failures.inc();
                tracing::warn!(
                    database = self.sh.store.target(),
                    error = %e,
                    "conversation log database not ready"
                );
                self.healthy = false;
                self.backoff = (self.backoff * 2).min(self.sh.max_backoff);
                self.next_probe = Instant::now() + jitter(self.backoff);
            }
        }
    }

    /// Writes the spill file into the database. Rows already there are
    /// skipped by the idempotent insert, so a replay cut short and redone
    /// never duplicates anything.
    async fn replay(&mut self) {
        // Files spilled while replaying are picked up in the next round;
        // the bound keeps the queue from waiting behind a long outage's file.
        for _ in 0..3 {
            let file = match self.sh.spill.take_for_replay() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the log spill file for replay");
                    return;
                }
            };
            let mut reader = match SpillReader::open(&file).await {
                Ok(r) => r,
                Err(e) => {
                    self.sh.spill.replay_failed();
                    tracing::error!(error = %e, file = %file.display(), "cannot read the log spill file");
                    return;
                }
            };
            let mut replayed = 0usize;
            loop {
                let batch = match reader.next_batch(self.sh.batch_size).await {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(e) => {
                        self.sh.spill.replay_failed();
                        tracing::error!(error = %e, "reading the log spill file failed");
                        return;
                    }
                };
                let written =
                    tokio::time::timeout(WRITE_TIMEOUT, self.sh.store.insert_batch(&batch))
                        .await
                        .unwrap_or(Err(super::StoreError::Timeout));
                if let Err(e) = written {
                    self.sh.metrics.write_failures.inc();
                    self.sh.spill.replay_failed();
                    tracing::warn!(error = %e, "spill replay failed; will retry");
                    self.mark_down();
                    return;
                }
                replayed += batch.len();
            }
            if let Err(e) = self.sh.spill.finish_replay(&file) {
                tracing::error!(error = %e, "cannot remove the replayed spill file");
                return;
            }
            tracing::info!(
                exchanges = replayed,
                skipped_lines = reader.skipped,
                "log spill file replayed"
            );
        }
    }
}

/// A pause between half and all of `d`, so replicas do not retry in step.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::random_range(ms / 2..=ms))
}
