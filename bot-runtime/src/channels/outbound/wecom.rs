//! WeCom replies through the message-send API with a cached access token,
//! and group-robot notifications.

use std::time::Duration;

use clawdbot_config::WeComConfig;
use serde_json::Value;

use super::call::{self, OutboundError, Pace, TokenCache};
use crate::channels::{ReplyTo, wecom};

pub struct WeCom {
    http: reqwest::Client,
    cfg: WeComConfig,
    token: TokenCache,
    pace: Pace,
    notify_pace: Pace,
    attempts: u32,
}

impl WeCom {
    pub fn new(http: reqwest::Client, cfg: &WeComConfig, attempts: u32) -> Self {
        Self {
            http,
            cfg: cfg.clone(),
            token: TokenCache::new(Duration::from_secs(300)),
            pace: Pace::per_second(cfg.replies_per_second),
            notify_pace: Pace::per_minute(cfg.notify_per_minute),
            attempts,
        }
    }

    fn base(&self) -> &str {
        self.cfg.api_base.trim_end_matches('/')
    }

    pub async fn reply(&self, to: &ReplyTo, text: &str) -> Result<(), OutboundError> {
        let ReplyTo::Wecom { to_user } = to else {
            return Err(OutboundError::Fatal("not a WeCom message".into()));
        };
        let agent = self.cfg.agent_id.clone().unwrap_or_default();
        let body = wecom::send_text_body(&agent, to_user, text);
        call::with_retries(self.attempts, &self.pace, || self.send(&body)).await
    }

    async fn send(&self, body: &Value) -> Result<(), OutboundError> {
        let token = self.access_token().await?;
        let url = with_query(
            &format!("{}/cgi-bin/message/send", self.base()),
            &[("access_token", &token)],
        )?;
        let (status, bytes) = call::send(self.http.post(url).json(body)).await?;
        call::check_status(status, &bytes)?;
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
                let corp = self.cfg.corp_id.clone().unwrap_or_default();
                let secret = self
                    .cfg
                    .secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default();
                let url = with_query(
                    &format!("{}/cgi-bin/gettoken", self.base()),
                    &[("corpid", &corp), ("corpsecret", &secret)],
                )?;
                let (status, bytes) = call::send(self.http.get(url)).await?;
                call::check_status(status, &bytes)?;
                result(errcode(&bytes))?;
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|_| OutboundError::Transient("token answer is not JSON".into()))?;
                let token = v["access_token"]
                    .as_str()
                    .ok_or_else(|| OutboundError::Fatal("no access_token in the answer".into()))?;
                Ok((
                    token.to_owned(),
                    Duration::from_secs(v["expires_in"].as_u64().unwrap_or(7200)),
                ))
            })
            .await
    }

    pub fn can_notify(&self) -> bool {
        self.cfg.robot_webhook_url.is_some()
    }

    pub async fn notify(&self, text: &str) -> Result<(), OutboundError> {
        let Some(url) = &self.cfg.robot_webhook_url else {
            return Err(OutboundError::Fatal(
                "wecom.robot_webhook_url is not set".into(),
            ));
        };
        let body = wecom::robot_markdown_body(text);
        call::with_retries(self.attempts, &self.notify_pace, || async {
            let (status, bytes) = call::send(self.http.post(url.expose()).json(&body)).await?;
            call::check_status(status, &bytes)?;
            result(errcode(&bytes))
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
