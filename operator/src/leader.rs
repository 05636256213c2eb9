//! Leader election on a Lease: the controller runs only while this replica
//! holds it, so two or more operator replicas never both write.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::metrics::Metrics;

pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
}

/// Runs `work` (given a stop signal) each time leadership is won, stops it
/// when leadership is lost, and returns after `shutdown`, releasing the Lease.
pub async fn run_as_leader<W, F>(
    client: Client,
    lease: LeaseSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    work: W,
) -> anyhow::Result<()>
where
    W: Fn(watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(lease.grace_secs)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    'outer: loop {
        while !*leader.borrow_and_update() {
            tokio::select! {
                r = leader.changed() => if r.is_err() { break 'outer },
                _ = shutdown.changed() => break 'outer,
            }
        }
        tracing::info!(lease = %lease.name, identity = %lease.identity, "became leader");
        metrics.leader.set(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(work(stop_rx));
        let stop_reason = loop {
            tokio::select! {
                _ = &mut task => break "controller ended",
                r = leader.changed() => {
                    if r.is_err() || !*leader.borrow_and_update() {
                        break "lost leadership";
                    }
                }
                _ = shutdown.changed() => break "shutdown",
            }
        };
        tracing::info!(reason = stop_reason, "stopping the controller");
        let _ = stop_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(20), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        metrics.leader.set(0);
        if stop_reason == "shutdown" || *shutdown.borrow() {
            break;
        }
    }
    // Closing the channel makes the lease task release the Lease.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "lease release failed"),
        _ => tracing::warn!("lease task did not finish"),
    }
    Ok(())
}
