//! WeCom replies through the message-send API with a cached access token,
//! and group-robot notifications.

use std::time::Duration;

use clawdbot_config::WeComConfig;
use serde_json::Value;

use crate::im::call::{self, Api, OutboundError, TokenCache};
use crate::im::{ReplyTo, wecom};

pub struct WeCom {
    api: Api,
    cfg: WeComConfig,
    token: TokenCache,
}

impl WeCom {
    pub fn new(http: reqwest::Client, cfg: &WeComConfig, attempts: u32) -> Self {
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

    pub async fn reply(&self, to: &ReplyTo, text: &str) -> Result<(), OutboundError> {
        let ReplyTo::Wecom { to_user } = to else {
            return Err(OutboundError::Fatal("not a WeCom message".into()));
        };
        let agent = self.cfg.agent_id.clone().unwrap_or_default();
        let body = wecom::send_text_body(&agent, to_user, text);
        self.api.reply(|| self.send(&body)).await
    }

    async fn send(&self, body: &Value) -> Result<(), OutboundError> {
        let token = self.access_token().await?;
        let url = with_query(
            &call::api_url(&self.cfg.api_base, "/cgi-bin/message/send"),
            &[("access_token", &token)],
        )?;
        let bytes = call::post_json(&self.api.http, url, body).await?;
        match errcode(&bytes) {
            Some((40014 | 42001 | 40001, _)) => {
                self.token.invalidate().await;
                Err(OutboundError::Transient(
                    "access token rejected; renewing".into(),
                ))
            }
            other => result(other),
        }
    }

    async fn access_token(&self) -> Result<String, OutboundError> {
        self.token
            .get(|| async {
                let url = with_query(
                    &call::api_url(&self.cfg.api_base, "/cgi-bin/gettoken"),
                    &[
                        ("corpid", self.cfg.corp_id.as_deref().unwrap_or_default()),
                        ("corpsecret", call::exposed(&self.cfg.secret)),
                    ],
                )?;
                let check = |bytes: &[u8]| result(errcode(bytes));
                call::fetch_token(self.api.http.get(url), check, "access_token", "expires_in").await
            })
            .await
    }

    pub fn can_notify(&self) -> bool {
        self.cfg.robot_webhook_url.is_some()
    }

    pub async fn notify(&self, text: &str) -> Result<(), OutboundError> {
        let url = call::required(&self.cfg.robot_webhook_url, "wecom.robot_webhook_url")?;
        let body = wecom::robot_markdown_body(text);
        self.api
            .notify(|| async {
                result(errcode(
                    &call::post_json(&self.api.http, url.expose(), &body).await?,
                ))
            })
            .await
    }
}

/// The URL with its query; the error never quotes it (it holds a secret).
fn with_query(base: &str, params: &[(&str, &str)]) -> Result<reqwest::Url, OutboundError> {
    reqwest::Url::parse_with_params(base, params)
        .map_err(|_| OutboundError::Fatal("wecom.api_base is not a usable URL".into()))
}

fn errcode(body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some((
        v["errcode"].as_i64()?,
        v["errmsg"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// 0 ok; -1 (busy) and 45009 (frequency limit) are worth a retry.
fn result(code: Option<(i64, String)>) -> Result<(), OutboundError> {
    match code {
        None | Some((0, _)) => Ok(()),
        Some((c @ (-1 | 45009 | 45033), msg)) => Err(OutboundError::Transient(format!(
            "WeCom errcode {c}: {msg}"
        ))),
        Some((c, msg)) => Err(OutboundError::Fatal(format!("WeCom errcode {c}: {msg}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wecom_errcodes_are_classified() {
        assert!(result(errcode(br#"{"errcode":0,"errmsg":"ok"}"#)).is_ok());
        assert!(matches!(
            result(errcode(br#"{"errcode":45009,"errmsg":"freq"}"#)),
            Err(OutboundError::Transient(_))
        ));
        assert!(matches!(
            result(errcode(br#"{"errcode":60020,"errmsg":"ip"}"#)),
            Err(OutboundError::Fatal(_))
        ));
    }
}
