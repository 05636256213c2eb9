//! Feishu / Lark replies through the reply API with a cached
//! tenant_access_token, and custom-bot notifications signed per the spec.

use std::time::Duration;

use clawdbot_config::{FeishuConfig, FeishuReplyFormat};
use serde_json::Value;

use crate::im::call::{self, Api, OutboundError, TokenCache};
use crate::im::{ReplyTo, feishu};
use crate::support::timefmt::now_ms;

pub struct Feishu {
    api: Api,
    cfg: FeishuConfig,
    token: TokenCache,
}

impl Feishu {
    pub fn new(http: reqwest::Client, cfg: &FeishuConfig, attempts: u32) -> Self {
        Self {
            api: Api::new(
                http,
                attempts,
                cfg.replies_per_second,
                cfg.notify_per_minute,
            ),
            cfg: cfg.clone(),
            // Feishu hands out a new token in the last 30 minutes of the old one.
            token: TokenCache::new(Duration::from_secs(30 * 60)),
        }
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
        let path = format!("/open-apis/im/v1/messages/{message_id}/reply");
        let url = call::api_url(&self.cfg.api_base, &path);
        self.api.reply(|| self.post_api(&url, &body)).await
    }

    async fn post_api(&self, url: &str, body: &Value) -> Result<(), OutboundError> {
        let token = self.tenant_token().await?;
        let (status, bytes) =
            call::send(self.api.http.post(url).bearer_auth(token).json(body)).await?;
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
                let path = "/open-apis/auth/v3/tenant_access_token/internal";
                let url = call::api_url(&self.cfg.api_base, path);
                let body = feishu::tenant_token_body(
                    self.cfg.app_id.as_deref().unwrap_or_default(),
                    call::exposed(&self.cfg.app_secret),
                );
                let req = self.api.http.post(url).json(&body);
                call::fetch_token(req, api_result, "tenant_access_token", "expire").await
            })
            .await
    }

    pub fn can_notify(&self) -> bool {
        self.cfg.notify_webhook_url.is_some()
    }

    /// A custom-bot notification, signed with the current time per attempt.
    pub async fn notify(&self, text: &str) -> Result<(), OutboundError> {
        let url = call::required(&self.cfg.notify_webhook_url, "feishu.notify_webhook_url")?;
        self.api
            .notify(|| async {
                let sign = self
                    .cfg
                    .notify_secret
                    .as_ref()
                    .map(|s| (now_ms() / 1000, s.expose()));
                let body = feishu::custom_bot_body(text, sign);
                api_result(&call::post_json(&self.api.http, url.expose(), &body).await?)
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
