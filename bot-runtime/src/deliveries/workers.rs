//! The worker pool: claims deliveries from the store, answers each on a
//! free worker while renewing its claim, marks it done; on drain, hands
//! back or finishes what it holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::answer::Answerer;
use super::payload;
use super::{Claimed, Deliveries, Delivery};

type LocalQueue = Option<mpsc::Receiver<Claimed>>;

impl Deliveries {
    /// Runs the workers until `draining` is cancelled, then, until
    /// `drain_deadline`: on a shared store, finishes the answers in
    /// progress and hands the rest back; on this replica's own file,
    /// answers its whole backlog.
    pub async fn run(
        self: Arc<Self>,
        answerer: Arc<Answerer>,
        draining: CancellationToken,
        drain_deadline: Duration,
    ) {
        let slots = Arc::new(Semaphore::new(self.cfg.workers));
        let mut local = self.local_rx.lock().await.take();
        let mut tasks = JoinSet::new();
        let mut last_recovery = tokio::time::Instant::now() - self.store.recovery_every();
        while let Err(e) = self.store.prepare().await {
            tracing::warn!(error = %e, "delivery store not ready; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = draining.cancelled() => return,
            }
        }
        while !draining.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = draining.cancelled() => {}
                }
                continue;
            }
            let batch = tokio::select! {
                b = self.next_batch(free, &mut local, &mut last_recovery) => b,
                _ = draining.cancelled() => continue,
            };
            for claimed in batch {
                self.start_work(&answerer, &slots, &mut tasks, claimed)
                    .await;
            }
        }
        let deadline = tokio::time::Instant::now() + drain_deadline;
        // Nothing new reaches the local queue from here on: records made
        // while draining (a long connection's last frames) are left due.
        if let Some(rx) = local.as_mut() {
            rx.close();
        }
        if !self.store.is_shared() {
            // This replica's own file: no other replica can answer what it
            // holds, so the drain answers its backlog, not just the work
            // in progress.
            self.answer_backlog(&answerer, &slots, local.as_mut(), &mut tasks, deadline)
                .await;
            self.finish_running(&mut tasks, deadline).await;
            match self.pending().await {
                Ok(0) => {}
                Ok(left) => tracing::warn!(
                    left,
                    "drain deadline passed with IM deliveries unanswered; they stay in the \
                     database file and are answered on the next start with this data_dir"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot count unanswered IM deliveries"),
            }
            return;
        }
        // A shared store: deliveries not yet started go back to it for
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
        answerer: &Arc<Answerer>,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        claimed: Claimed,
    ) {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            self.release(&claimed).await;
            return;
        };
        let me = self.clone();
        let answerer = answerer.clone();
        tasks.spawn(async move {
            me.work(&answerer, claimed).await;
            drop(permit);
        });
    }

    /// Draining on the replica's own file: answers what its local queue
    /// still holds, then the file's due rows, a worker's worth at a time,
    /// until none are left or the deadline passes.
    async fn answer_backlog(
        self: &Arc<Self>,
        answerer: &Arc<Answerer>,
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
                match self.store.claim_lapsed(free - batch.len()).await {
                    Ok(rows) => batch.extend(rows),
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
                self.start_work(answerer, slots, tasks, claimed).await;
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
    /// off, and their claims lapse for whoever reads the store next.
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
        local: &mut LocalQueue,
        last_recovery: &mut tokio::time::Instant,
    ) -> Vec<Claimed> {
        let every = self.store.recovery_every();
        if last_recovery.elapsed() >= every {
            *last_recovery = tokio::time::Instant::now();
            let found = self.claim_lapsed(max).await;
            if !found.is_empty() {
                return found;
            }
        }
        if !self.store.claims_on_record() {
            return match self.store.read_new(max).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read new IM deliveries");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Vec::new()
                }
            };
        }
        let Some(rx) = local.as_mut() else {
            tokio::time::sleep(every).await;
            return Vec::new();
        };
        match tokio::time::timeout(every, rx.recv()).await {
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

    async fn claim_lapsed(&self, max: usize) -> Vec<Claimed> {
        match self.store.claim_lapsed(max).await {
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
    async fn work(&self, answerer: &Answerer, claimed: Claimed) {
        // A delivery claimed on record may have waited in the local queue
        // past its lease, and been taken by another replica: confirm it
        // is still ours.
        if self.store.claims_on_record() {
            match self.store.renew(&claimed.key).await {
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
        let delivery: Delivery = match payload::open(&self.keyring, &claimed.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "unreadable IM delivery record dropped");
                self.finish(&claimed).await;
                return;
            }
        };
        let gauge = &answerer.in_flight;
        gauge.inc();
        let renew_every = self.lease() / 3;
        let answer = answerer.answer(&delivery);
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
        match self.store.renew(&c.key).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("cannot renew an IM delivery claim: claim lost"),
            Err(e) => tracing::warn!(error = %e, "cannot renew an IM delivery claim"),
        }
    }

    async fn finish(&self, c: &Claimed) {
        // A failed finish leaves the delivery to be answered again after
        // the lease: retry a few times before accepting that.
        for attempt in 0..5u32 {
            match self.store.complete(&c.key).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot mark an IM delivery answered");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    async fn release(&self, c: &Claimed) {
        if let Err(e) = self.store.release(&c.key).await {
            tracing::warn!(error = %e, "cannot release an IM delivery claim");
        }
    }
}
