//! DingTalk replies: through the message's `sessionWebhook` while it is
//! valid, else the robot OpenAPI with a cached access token; custom-robot
//! notifications signed per DingTalk's "加签" scheme.

use std::time::Duration;

use clawdbot_config::{DingTalkConfig, DingTalkReplyFormat};
use serde_json::Value;

use crate::im::call::{self, Api, OutboundError, TokenCache};
use crate::im::{ReplyTo, dingtalk};
use crate::support::timefmt::now_ms;

/// A sessionWebhook this close to expiry is not used: the request might
/// arrive after it.
const WEBHOOK_MARGIN_MS: i64 = 60_000;

pub struct DingTalk {
    api: Api,
    cfg: DingTalkConfig,
    token: TokenCache,
}

/// Title shown in DingTalk's conversation list for a Markdown reply.
fn title_of(text: &str) -> String {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("Reply");
    let first = first.trim_start_matches(['#', ' ', '>', '*', '-']);
    first.chars().take(30).collect()
}

impl DingTalk {
    pub fn new(http: reqwest::Client, cfg: &DingTalkConfig, attempts: u32) -> Self {
        Self {
            api: Api::new(
                http,
                attempts,
                cfg.replies_per_second,
                cfg.notify_per_minute,
            ),
            cfg: cfg.clone(),
            token: TokenCache::new(Duration::from_secs(300)),
        }
    }

    /// Only DingTalk's own hosts (or the configured API host) may receive
    /// an answer: in HTTP mode the callback signature does not cover the
    /// body, so a replayed signature must not steer answers elsewhere.
    fn trusted_webhook(&self, url: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(url) else {
            return false;
        };
        let api = reqwest::Url::parse(&self.cfg.api_base).ok();
        let same_as_api = api.as_ref().is_some_and(|a| {
            a.host_str() == u.host_str() && a.port_or_known_default() == u.port_or_known_default()
        });
        same_as_api
            || (u.scheme() == "https"
                && matches!(u.host_str(), Some("oapi.dingtalk.com" | "api.dingtalk.com")))
    }

    /// The reply body for the session webhook, as configured.
    fn webhook_body(&self, text: &str, at: Option<&str>) -> Value {
        match self.cfg.reply_format {
            DingTalkReplyFormat::Text => dingtalk::text_reply(text, at),
            // ActionCards cannot @ anyone (DingTalk has no `at` for them).
            DingTalkReplyFormat::Markdown => dingtalk::markdown_reply(&title_of(text), text, at),
            DingTalkReplyFormat::ActionCard => dingtalk::action_card_reply(
                &title_of(text),
                text,
                &self.cfg.action_card_button,
                self.cfg.action_card_url.as_deref().unwrap_or_default(),
            ),
        }
    }

    /// OpenAPI (msgKey, msgParam) for the configured format.
    fn openapi_message(&self, text: &str) -> (&'static str, String) {
        match self.cfg.reply_format {
            DingTalkReplyFormat::Text => ("sampleText", dingtalk::text_msg_param(text)),
            DingTalkReplyFormat::Markdown => (
                "sampleMarkdown",
                dingtalk::markdown_msg_param(&title_of(text), text),
            ),
            DingTalkReplyFormat::ActionCard => (
                "sampleActionCard",
                dingtalk::action_card_msg_param(
                    &title_of(text),
                    text,
                    &self.cfg.action_card_button,
                    self.cfg.action_card_url.as_deref().unwrap_or_default(),
                ),
            ),
        }
    }

    pub async fn reply(&self, to: &ReplyTo, text: &str) -> Result<(), OutboundError> {
        let ReplyTo::Dingtalk {
            session_webhook,
            session_webhook_expires_ms,
            group,
            conversation_id,
            sender_staff_id,
            robot_code,
        } = to
        else {
            return Err(OutboundError::Fatal("not a DingTalk message".into()));
        };
        let webhook = session_webhook.as_deref().filter(|url| {
            session_webhook_expires_ms.is_none_or(|exp| now_ms() + WEBHOOK_MARGIN_MS < exp)
                && self.trusted_webhook(url)
        });
        if let Some(url) = webhook {
            let at = if *group {
                sender_staff_id.as_deref()
            } else {
                None
            };
            let body = self.webhook_body(text, at);
            return self.api.reply(|| self.post_webhook(url, &body)).await;
        }
        let robot = robot_code
            .as_deref()
            .or(self.cfg.robot_code.as_deref())
            .or(self.cfg.app_key.as_deref())
            .ok_or_else(|| OutboundError::Fatal("no robot code for the OpenAPI".into()))?;
        let (key, param) = self.openapi_message(text);
        let (path, body) = if *group {
            (
                "/v1.0/robot/groupMessages/send",
                dingtalk::group_send_body(robot, conversation_id, key, &param),
            )
        } else {
            let user = sender_staff_id.as_deref().ok_or_else(|| {
                OutboundError::Fatal("no staff id to send a one-to-one reply to".into())
            })?;
            (
                "/v1.0/robot/oToMessages/batchSend",
                dingtalk::batch_send_body(robot, &[user], key, &param),
            )
        };
        let url = call::api_url(&self.cfg.api_base, path);
        self.api.reply(|| self.post_openapi(&url, &body)).await
    }

    /// Robot webhooks answer 200 with `errcode`.
    async fn post_webhook(&self, url: &str, body: &Value) -> Result<(), OutboundError> {
        robot_result(&call::post_json(&self.api.http, url, body).await?)
    }

    async fn post_openapi(&self, url: &str, body: &Value) -> Result<(), OutboundError> {
        let token = self.access_token().await?;
        let (status, bytes) = call::send(
            self.api
                .http
                .post(url)
                .header("x-acs-dingtalk-access-token", token)
                .json(body),
        )
        .await?;
        if status == http::StatusCode::UNAUTHORIZED || token_rejected(&bytes) {
            self.token.invalidate().await;
            return Err(OutboundError::Transient(
                "access token rejected; renewing".into(),
            ));
        }
        call::check_status(status, &bytes)
    }

    async fn access_token(&self) -> Result<String, OutboundError> {
        self.token
            .get(|| async {
                let url = call::api_url(&self.cfg.api_base, "/v1.0/oauth2/accessToken");
                let body = serde_json::json!({
                    "appKey": self.cfg.app_key.as_deref().unwrap_or_default(),
                    "appSecret": call::exposed(&self.cfg.app_secret),
                });
                let req = self.api.http.post(url).json(&body);
                call::fetch_token(req, |_| Ok(()), "accessToken", "expireIn").await
            })
            .await
    }

    /// Whether outbound notifications are configured.
    pub fn can_notify(&self) -> bool {
        self.cfg.webhook_url.is_some()
    }

    /// Sends a custom-robot notification, waiting for the per-minute limit.
    pub async fn notify(&self, title: &str, text: &str) -> Result<(), OutboundError> {
        let url = call::required(&self.cfg.webhook_url, "dingtalk.webhook_url")?;
        let body = dingtalk::robot_markdown_body(title, text);
        self.api
            .notify(|| async {
                // Signed afresh per attempt: the timestamp must be current.
                let signed = dingtalk::signed_robot_url(
                    url.expose(),
                    self.cfg.secret.as_ref().map(|s| s.expose()),
                    now_ms(),
                );
                self.post_webhook(&signed, &body).await
            })
            .await
    }
}

/// `errcode` of a robot webhook answer: 0 ok; 130101 (too many messages)
/// and -1 (busy) are worth a retry; others are not.
fn robot_result(body: &[u8]) -> Result<(), OutboundError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v["errcode"].as_i64() {
        Some(0) | None => Ok(()),
        Some(code @ (130101 | -1)) => Err(OutboundError::Transient(format!(
            "DingTalk errcode {code}: {}",
            v["errmsg"].as_str().unwrap_or_default()
        ))),
        Some(code) => Err(OutboundError::Fatal(format!(
            "DingTalk errcode {code}: {}",
            v["errmsg"].as_str().unwrap_or_default()
        ))),
    }
}

/// OpenAPI errors naming the access token (expired, invalid).
fn token_rejected(body: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["code"]
        .as_str()
        .is_some_and(|c| c.contains("AccessToken") || c == "InvalidAuthentication")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_errcodes_are_classified() {
        assert!(robot_result(br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(matches!(
            robot_result(br#"{"errcode":130101,"errmsg":"send too fast"}"#),
            Err(OutboundError::Transient(_))
        ));
        assert!(matches!(
            robot_result(br#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Err(OutboundError::Fatal(_))
        ));
    }

    #[test]
    fn only_dingtalk_hosts_or_the_api_host_get_answers() {
        crate::support::tls::install_crypto_provider();
        let d = DingTalk::new(reqwest::Client::new(), &DingTalkConfig::default(), 1);
        assert!(d.trusted_webhook("https://oapi.dingtalk.com/robot/sendBySession?session=x"));
        assert!(!d.trusted_webhook("https://evil.example/robot"));
        assert!(!d.trusted_webhook("http://oapi.dingtalk.com/robot"));
        let local = DingTalkConfig {
            api_base: "http://127.0.0.1:9000".into(),
            ..Default::default()
        };
        let d = DingTalk::new(reqwest::Client::new(), &local, 1);
        assert!(d.trusted_webhook("http://127.0.0.1:9000/robot/sendBySession?session=x"));
        assert!(!d.trusted_webhook("http://127.0.0.1:9001/robot"));
    }

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(title_of("## Hello\nworld"), "Hello");
        assert_eq!(title_of(""), "Reply");
    }
}
