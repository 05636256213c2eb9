//! Slack replies through chat.postMessage with the bot token.

use std::time::Duration;

use clawdbot_config::SlackConfig;
use serde_json::Value;

use crate::im::call::{self, OutboundError, Pace};
use crate::im::{ReplyTo, slack};

pub struct Slack {
    http: reqwest::Client,
    cfg: SlackConfig,
    pace: Pace,
    attempts: u32,
}

impl Slack {
    pub fn new(http: reqwest::Client, cfg: &SlackConfig, attempts: u32) -> Self {
        Self {
            http,
            cfg: cfg.clone(),
            pace: Pace::per_second(cfg.replies_per_second),
            attempts,
        }
    }

    pub async fn reply(&self, to: &ReplyTo, text: &str) -> Result<(), OutboundError> {
        let ReplyTo::Slack { channel, thread_ts } = to else {
            return Err(OutboundError::Fatal("not a Slack message".into()));
        };
        let body = slack::post_message_body(channel, text, thread_ts.as_deref());
        call::with_retries(self.attempts, &self.pace, || self.post(&body)).await
    }

    async fn post(&self, body: &Value) -> Result<(), OutboundError> {
        let token = call::exposed(&self.cfg.bot_token);
        let url = call::api_url(&self.cfg.api_base, "/chat.postMessage");
        let resp = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(OutboundError::from_reqwest)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(OutboundError::from_reqwest)?;
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            // Slack says how long to wait; honour it before the retry.
            tokio::time::sleep(call::backoff(0, retry_after)).await;
        }
        call::check_status(status, &bytes)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match (v["ok"].as_bool(), v["error"].as_str()) {
            (Some(true), _) => Ok(()),
            (
                _,
                Some(
                    e @ ("ratelimited"
                    | "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"),
                ),
            ) => Err(OutboundError::Transient(format!("Slack error {e}"))),
            (_, e) => Err(OutboundError::Fatal(format!(
                "Slack error {}",
                e.unwrap_or("unknown")
            ))),
        }
    }
}
