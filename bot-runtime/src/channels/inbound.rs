//! The verifiers of the enabled webhook channels, built once from config,
//! and one entry point from a request's parts to a verdict.

use clawdbot_config::{DingTalkMode, FeishuMode, RuntimeConfig};
use http::HeaderMap;

use super::{Platform, Rejection, Verdict, dingtalk, feishu, slack, wecom};

/// `None` for a channel that is disabled or answers over a long connection.
pub struct Verifiers {
    dingtalk: Option<dingtalk::Verifier>,
    feishu: Option<feishu::Verifier>,
    wecom: Option<(wecom::Crypto, i64)>,
    slack: Option<slack::Verifier>,
}

impl Verifiers {
    /// Fails on credentials that cannot work (a malformed EncodingAESKey),
    /// which config validation reports first.
    pub fn from_config(cfg: &RuntimeConfig) -> anyhow::Result<Self> {
        let dingtalk = (cfg.dingtalk.enabled && cfg.dingtalk.mode == DingTalkMode::Http)
            .then(|| dingtalk::Verifier::from_config(&cfg.dingtalk))
            .flatten();
        let feishu = (cfg.feishu.enabled && cfg.feishu.mode == FeishuMode::Webhook)
            .then(|| feishu::Verifier::from_config(&cfg.feishu))
            .flatten();
        let wecom = if cfg.wecom.enabled {
            let w = &cfg.wecom;
            let crypto = wecom::Crypto::new(
                w.token.as_ref().map(|s| s.expose()).unwrap_or_default(),
                w.encoding_aes_key
                    .as_ref()
                    .map(|s| s.expose())
                    .unwrap_or_default(),
                w.corp_id.as_deref().unwrap_or_default(),
            )
            .map_err(|e| anyhow::anyhow!("wecom: {e}"))?;
            Some((
                crypto,
                i64::try_from(w.timestamp_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            ))
        } else {
            None
        };
        let slack = cfg
            .slack
            .enabled
            .then(|| slack::Verifier::from_config(&cfg.slack))
            .flatten();
        Ok(Self {
            dingtalk,
            feishu,
            wecom,
            slack,
        })
    }

    pub fn enabled(&self, p: Platform) -> bool {
        match p {
            Platform::Dingtalk => self.dingtalk.is_some(),
            Platform::Feishu => self.feishu.is_some(),
            Platform::Wecom => self.wecom.is_some(),
            Platform::Slack => self.slack.is_some(),
        }
    }

    /// A POST delivery. `None`: the channel takes no webhooks.
    pub fn verify_post(
        &self,
        p: Platform,
        headers: &HeaderMap,
        query: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Option<Result<Verdict, Rejection>> {
        Some(match p {
            Platform::Dingtalk => dingtalk::verify(headers, body, self.dingtalk.as_ref()?, now_ms),
            Platform::Feishu => feishu::verify(headers, body, self.feishu.as_ref()?, now_ms),
            Platform::Wecom => {
                let (c, window) = self.wecom.as_ref()?;
                wecom::verify_message(query, body, c, *window, now_ms)
            }
            Platform::Slack => slack::verify(headers, body, self.slack.as_ref()?, now_ms),
        })
    }

    /// WeCom's GET URL verification.
    pub fn verify_wecom_url(&self, query: &str, now_ms: i64) -> Option<Result<Verdict, Rejection>> {
        let (c, window) = self.wecom.as_ref()?;
        Some(wecom::verify_url(query, c, *window, now_ms))
    }
}
