//! Answers one IM delivery: a turn in the conversation's session (same
//! sessions, models and logs as the web chat), then the reply through the
//! platform's API.

use std::sync::Arc;
use std::time::Duration;

use clawdbot_config::ModelConfig;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};
use sha2::{Digest, Sha256};

use super::Delivery;
use crate::auth::Caller;
use crate::chat::engine::{CallObserver, session_request};
use crate::chat::model::Provider;
use crate::chat::sessions::{SessionError, SessionStore, Turn};
use crate::convlog::LogWriter;
use crate::im::Inbound;
use crate::im::outbound::Outbound;
use crate::support::timefmt::now_ms;
use crate::telemetry::metrics::{Metrics, ModelMetrics};

/// Said when the model cannot answer; the details go to the log.
const APOLOGY: &str = "Sorry, I cannot answer right now. Please try again in a moment.";

/// The session of one user in one conversation on one platform: 128 bits
/// of a hash, so the same person in the same chat continues their session
/// on any replica, and nobody can pick another's id.
pub fn session_id(m: &Inbound) -> String {
    let mut h = Sha256::new();
    for part in [m.platform.label(), &m.conversation_id, &m.user_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Sessions of a platform are owned by `im:<platform>`: API keys other
/// than admin ones cannot read them.
fn caller(m: &Inbound) -> Caller {
    Caller {
        key_name: Some(format!(
            "{}{}",
            clawdbot_config::IM_OWNER_PREFIX,
            m.platform.label()
        )),
        scope: clawdbot_config::Scope::User,
    }
}

/// What answering an IM message takes: the chat side (model, sessions,
/// logs), the platforms' APIs, and the channel metrics.
pub struct Answerer {
    pub model: ModelConfig,
    /// `sessions.max_message_bytes`: longer messages get a refusal.
    pub max_message_bytes: usize,
    pub provider: Arc<dyn Provider>,
    pub sessions: Arc<SessionStore>,
    pub logs: LogWriter,
    pub outbound: Arc<Outbound>,
    pub model_metrics: ModelMetrics,
    pub replies: IntCounterVec,
    pub reply_duration: HistogramVec,
    pub in_flight: IntGauge,
}

impl Answerer {
    /// The channel metrics' handles from `metrics`; the rest as given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: ModelConfig,
        max_message_bytes: usize,
        provider: Arc<dyn Provider>,
        sessions: Arc<SessionStore>,
        logs: LogWriter,
        outbound: Arc<Outbound>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            model,
            max_message_bytes,
            provider,
            sessions,
            logs,
            outbound,
            model_metrics: metrics.model(),
            replies: metrics.channel_replies.clone(),
            reply_duration: metrics.channel_reply_duration.clone(),
            in_flight: metrics.channel_deliveries_in_flight.clone(),
        }
    }

    /// Answers one delivery; failures are logged and counted, never
    /// returned (the delivery is done either way).
    pub async fn answer(&self, d: &Delivery) {
        answer(self, d).await
    }
}

async fn answer(st: &Answerer, d: &Delivery) {
    let m = &d.inbound;
    let channel = m.platform.label();
    let max = st.max_message_bytes;
    let text = if m.text.len() > max {
        tracing::info!(
            channel,
            bytes = m.text.len(),
            max,
            "an IM message over sessions.max_message_bytes"
        );
        format!("Sorry, that message is too long for me: at most {max} bytes, please.")
    } else {
        match begin(st, m).await {
            Ok(turn) => converse(st, m, turn).await,
            Err(e) => {
                tracing::warn!(channel, error = %e, "no session for an IM message");
                APOLOGY.to_owned()
            }
        }
    };
    match st.outbound.reply(m, &text).await {
        Ok(()) => {
            st.replies.with_label_values(&[channel, "sent"]).inc();
            let secs = (now_ms() - d.received_ms).max(0) as f64 / 1000.0;
            st.reply_duration
                .with_label_values(&[channel])
                .observe(secs);
        }
        Err(e) => {
            st.replies.with_label_values(&[channel, "failed"]).inc();
            tracing::error!(channel, error = %e, "IM reply failed after every retry");
        }
    }
}

/// The session's turn; a busy session (the same user's previous message
/// still being answered) or a store that does not answer is retried a few
/// times before giving up.
async fn begin(st: &Answerer, m: &Inbound) -> Result<Turn, SessionError> {
    let id = session_id(m);
    let who = caller(m);
    let mut last = SessionError::Busy;
    for attempt in 0..4u32 {
        match st
            .sessions
            .begin_keyed_turn(&id, &who, Some(m.user_id.clone()))
            .await
        {
            Ok(t) => return Ok(t),
            Err(e @ (SessionError::Busy | SessionError::Unavailable(_))) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Asks the model and records the exchange; the text to send back.
async fn converse(st: &Answerer, m: &Inbound, turn: Turn) -> String {
    let channel = m.platform.label();
    let req = session_request(&st.model, &turn.history, &m.text);
    let obs = CallObserver::start(
        st.model_metrics.clone(),
        st.provider.label(),
        channel,
        Some(turn.session.id.clone()),
    );
    match st.provider.complete(&req).await {
        Ok(done) => {
            let mut ex = obs.exchange(
                &done.model,
                done.usage,
                m.text.clone(),
                done.content.clone(),
            );
            ex.user_id = Some(m.user_id.clone());
            ex.owner = turn.session.owner.clone();
            obs.finish(&done.model, Ok(done.usage));
            if let Err(e) = turn.finish(m.text.clone(), done.content.clone()).await {
                tracing::warn!(channel, error = %e, "IM answer not added to the session history");
            }
            st.logs.submit(ex).await;
            if done.content.trim().is_empty() {
                APOLOGY.to_owned()
            } else {
                done.content
            }
        }
        Err(e) => {
            obs.finish(&req.model, Err(&e));
            tracing::warn!(channel, error = %e, "model call for an IM message failed");
            APOLOGY.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::{Platform, ReplyTo};

    fn msg(conv: &str, user: &str) -> Inbound {
        Inbound {
            platform: Platform::Slack,
            delivery_id: "Ev1".into(),
            message_id: None,
            conversation_id: conv.into(),
            user_id: user.into(),
            text: "hi".into(),
            reply: ReplyTo::Slack {
                channel: conv.into(),
                thread_ts: None,
            },
        }
    }

    #[test]
    fn session_ids_separate_platform_conversation_and_user() {
        let a = session_id(&msg("C1", "U1"));
        assert!(crate::chat::sessions::is_valid_session_id(&a));
        assert_eq!(a, session_id(&msg("C1", "U1")));
        assert_ne!(a, session_id(&msg("C1", "U2")));
        assert_ne!(a, session_id(&msg("C2", "U1")));
        // Lengths are part of the hash: no ambiguity from concatenation.
        assert_ne!(session_id(&msg("C1U", "1")), session_id(&msg("C1", "U1")));
        let mut other = msg("C1", "U1");
        other.platform = Platform::Feishu;
        assert_ne!(a, session_id(&other));
    }
}
