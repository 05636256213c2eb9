//! The verifiers of the enabled webhook channels, built once from config,
//! and one entry point from a request's parts to a verdict.

use clawdbot_config::{DingTalkMode, FeishuMode, RuntimeConfig};
use http::HeaderMap;

use super::crypto::window_ms;
use super::{Platform, Rejection, SignatureBinding, Verdict, dingtalk, feishu, slack, wecom};

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
        // Config validation names missing WeCom keys first; a key that is
        // there but malformed fails here.
        let wecom = match cfg
            .wecom
            .enabled
            .then(|| wecom::Crypto::from_config(&cfg.wecom))
            .flatten()
        {
            Some(Ok(c)) => Some((c, window_ms(cfg.wecom.timestamp_window_secs))),
            Some(Err(e)) => anyhow::bail!("wecom: {e}"),
            None => None,
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

    /// What a verified message of `p` must be bound to when recorded
    /// (DingTalk's signature, which does not cover the body); `None` for
    /// platforms whose signature covers the body.
    pub fn signature_binding(&self, p: Platform, headers: &HeaderMap) -> Option<SignatureBinding> {
        match p {
            Platform::Dingtalk => dingtalk::replay::binding(headers, self.dingtalk.as_ref()?),
            Platform::Feishu | Platform::Wecom | Platform::Slack => None,
        }
    }

    /// WeCom's GET URL verification.
    pub fn verify_wecom_url(&self, query: &str, now_ms: i64) -> Option<Result<Verdict, Rejection>> {
        let (c, window) = self.wecom.as_ref()?;
        Some(wecom::verify_url(query, c, *window, now_ms))
    }
}
