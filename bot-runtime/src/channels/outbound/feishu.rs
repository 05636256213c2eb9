//! Feishu / Lark replies through the reply API with a cached
//! tenant_access_token, and custom-bot notifications signed per the spec.

use std::time::Duration;

use clawdbot_config::{FeishuConfig, FeishuReplyFormat};
use serde_json::Value;

use super::call::{self, OutboundError, Pace, TokenCache};
use crate::channels::{ReplyTo, feishu};
use crate::logs::now_ms;

pub struct Feishu {
    http: reqwest::Client,
    cfg: FeishuConfig,
    token: TokenCache,
    pace: Pace,
    notify_pace: Pace,
    attempts: u32,
}

impl Feishu {
    pub fn new(http: reqwest::Client, cfg: &FeishuConfig, attempts: u32) -> Self {
        Self {
            http,
            cfg: cfg.clone(),
            // Feishu hands out a new token in the last 30 minutes of the old one.
            token: TokenCache::new(Duration::from_secs(30 * 60)),
            pace: Pace::per_second(cfg.replies_per_second),
            notify_pace: Pace::per_minute(cfg.notify_per_minute),
            attempts,
        }
    }

    fn base(&self) -> &str {
        self.cfg.api_base.trim_end_matches('/')
    }

    pub async fn reply(&self, to: &ReplyTo, text: &str) -> Result<(), OutboundError> {
        let ReplyTo::Feishu { message_id, .. } = to else {
            return Err(OutboundError::Fatal("not a Feishu message".into()));
        };
        if message_id.is_empty()
            || !message_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(OutboundError::Fatal(
                "message id is not usable in a URL".into(),
            ));
        }
        let body = match self.cfg.reply_format {
            FeishuReplyFormat::Text => feishu::text_reply_body(text),
            FeishuReplyFormat::Card => feishu::card_reply_body(text),
        };
        let url = format!(
            "{}/open-apis/im/v1/messages/{message_id}/reply",
            self.base()
        );
        call::with_retries(self.attempts, &self.pace, || self.post_api(&url, &body)).await
    }

    async fn post_api(&self, url: &str, body: &Value) -> Result<(), OutboundError> {
        let token = self.tenant_token().await?;
        let (status, bytes) = call::send(self.http.post(url).bearer_auth(token).json(body)).await?;
        let code = api_code(&bytes);
        if matches!(code, Some(99991661 | 99991663 | 99991664 | 99991668)) {
            self.token.invalidate().await;
            return Err(OutboundError::Transient(
                "tenant token rejected; renewing".into(),
            ));
        }
        call::check_status(status, &bytes)?;
        api_result(&bytes)
    }

    async fn tenant_token(&self) -> Result<String, OutboundError> {
        self.token
            .get(|| async {
                let id = self.cfg.app_id.clone().unwrap_or_default();
                let secret = self
                    .cfg
                    .app_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default();
                let url = format!(
                    "{}/open-apis/auth/v3/tenant_access_token/internal",
                    self.base()
                );
                let (status, bytes) = call::send(
                    self.http
                        .post(url)
                        .json(&feishu::tenant_token_body(&id, &secret)),
                )
                .await?;
                call::check_status(status, &bytes)?;
                api_result(&bytes)?;
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|_| OutboundError::Transient("token answer is not JSON".into()))?;
                let token = v["tenant_access_token"].as_str().ok_or_else(|| {
                    OutboundError::Fatal("no tenant_access_token in the answer".into())
                })?;
                Ok((
                    token.to_owned(),
                    Duration::from_secs(v["expire"].as_u64().unwrap_or(7200)),
                ))
            })
            .await
    }

    pub fn can_notify(&self) -> bool {
        self.cfg.notify_webhook_url.is_some()
    }

    /// A custom-bot notification, signed with the current time per attempt.
    pub async fn notify(&self, text: &str) -> Result<(), OutboundError> {
        let Some(url) = &self.cfg.notify_webhook_url else {
            return Err(OutboundError::Fatal(
                "feishu.notify_webhook_url is not set".into(),
            ));
        };
        call::with_retries(self.attempts, &self.notify_pace, || async {
            let sign = self
                .cfg
                .notify_secret
                .as_ref()
                .map(|s| (now_ms() / 1000, s.expose()));
            let body = feishu::custom_bot_body(text, sign);
            let (status, bytes) = call::send(self.http.post(url.expose()).json(&body)).await?;
            call::check_status(status, &bytes)?;
            api_result(&bytes)
        })
        .await
    }
}

fn api_code(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["code"].as_i64().or_else(|| v["StatusCode"].as_i64())
}

/// Feishu's `code`: 0 ok; rate limits (99991400, 11232) and internal
/// errors are worth a retry.
fn api_result(body: &[u8]) -> Result<(), OutboundError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v["msg"]
        .as_str()
        .or(v["StatusMessage"].as_str())
        .unwrap_or_default();
    match api_code(body) {
        Some(0) | None => Ok(()),
        Some(code @ (99991400 | 11232 | 1000004 | 1000005)) => Err(OutboundError::Transient(
            format!("Feishu code {code}: {msg}"),
        )),
        Some(code) => Err(OutboundError::Fatal(format!("Feishu code {code}: {msg}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feishu_codes_are_classified() {
        assert!(api_result(br#"{"code":0,"msg":"success"}"#).is_ok());
        assert!(matches!(
            api_result(br#"{"code":99991400,"msg":"limited"}"#),
            Err(OutboundError::Transient(_))
        ));
        assert!(matches!(
            api_result(br#"{"code":19021,"msg":"sign match fail"}"#),
            Err(OutboundError::Fatal(_))
        ));
        // Custom bots answer in an older shape.
        assert!(api_result(br#"{"StatusCode":0,"StatusMessage":"success"}"#).is_ok());
    }
}
