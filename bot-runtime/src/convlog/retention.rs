//! Retention: deletes exchanges (and idle sessions) older than
//! `logs.retention_days`, in small statements with pauses, so pruning a
//! large backlog never holds long locks on a busy database.

use std::time::Duration;

use super::LogStore;
use crate::support::timefmt::now_ms;

const ROWS_PER_STATEMENT: u32 = 1000;
const PAUSE: Duration = Duration::from_millis(200);
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes once: batch after batch until nothing older is left. Returns the
/// number of rows deleted.
pub async fn prune(store: &LogStore, retention_days: u32, pause: Duration) -> u64 {
    let cutoff = now_ms() - i64::from(retention_days) * 86_400_000;
    let mut total = 0;
    loop {
        match store.prune_once(cutoff, ROWS_PER_STATEMENT).await {
            Ok(n) => {
                total += n;
                if n < u64::from(ROWS_PER_STATEMENT) {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "conversation log retention failed; retrying later");
                return total;
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Prunes at start and then hourly.
pub fn spawn(store: LogStore, retention_days: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = prune(&store, retention_days, PAUSE).await;
            if n > 0 {
                tracing::info!(rows = n, retention_days, "pruned old conversation logs");
            }
        }
    })
}
