//! Outbound robot notifications (DingTalk custom robot, Feishu custom bot,
//! WeCom group robot): queued per platform and sent one at a time at the
//! platform's per-minute limit, so a burst waits instead of being dropped
//! (the platforms answer a burst over the limit with an error).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Platform;
use super::outbound::Outbound;
use crate::telemetry::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("no notification robot is configured for {0}")]
    NotConfigured(&'static str),
    #[error("the {0} notification queue is full; try again later")]
    QueueFull(&'static str),
}

pub struct Notifier {
    queues: Vec<(Platform, mpsc::Sender<Notification>)>,
}

impl Notifier {
    /// One queue and sender task per platform with a robot configured.
    /// Must run inside the Tokio runtime.
    pub fn start(outbound: Arc<Outbound>, capacity: usize, metrics: &Metrics) -> Self {
        let mut queues = Vec::new();
        for p in Platform::ALL {
            if !outbound.can_notify(p) {
                continue;
            }
            let (tx, mut rx) = mpsc::channel::<Notification>(capacity);
            let out = outbound.clone();
            let counter = metrics.notifications.clone();
            tokio::spawn(async move {
                while let Some(n) = rx.recv().await {
                    let outcome = match out.notify(p, &n.title, &n.text).await {
                        Ok(()) => "sent",
                        Err(e) => {
                            tracing::error!(channel = p.label(), error = %e, "notification not sent");
                            "failed"
                        }
                    };
                    counter.with_label_values(&[p.label(), outcome]).inc();
                }
            });
            queues.push((p, tx));
        }
        Self { queues }
    }

    /// No robots: what a runtime without channels holds.
    pub fn none() -> Self {
        Self { queues: Vec::new() }
    }

    pub fn enqueue(&self, p: Platform, n: Notification) -> Result<(), NotifyError> {
        let (_, tx) = self
            .queues
            .iter()
            .find(|(q, _)| *q == p)
            .ok_or(NotifyError::NotConfigured(p.label()))?;
        tx.try_send(n)
            .map_err(|_| NotifyError::QueueFull(p.label()))
    }
}
