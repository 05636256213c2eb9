//! Calls to the platforms' APIs: replies to users and robot notifications,
//! each platform paced to its rate limit and retried with backoff.

use std::time::Duration;

use clawdbot_config::RuntimeConfig;

pub use super::call::OutboundError;

use super::{Inbound, Platform, dingtalk, feishu, slack, wecom};

pub struct Outbound {
    dingtalk: dingtalk::reply::DingTalk,
    feishu: feishu::reply::Feishu,
    wecom: wecom::reply::WeCom,
    slack: slack::reply::Slack,
}

impl Outbound {
    pub fn new(cfg: &RuntimeConfig) -> anyhow::Result<Self> {
        let http = super::platform_client()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let attempts = cfg.channels.reply_attempts;
        Ok(Self {
            dingtalk: dingtalk::reply::DingTalk::new(http.clone(), &cfg.dingtalk, attempts),
            feishu: feishu::reply::Feishu::new(http.clone(), &cfg.feishu, attempts),
            wecom: wecom::reply::WeCom::new(http.clone(), &cfg.wecom, attempts),
            slack: slack::reply::Slack::new(http, &cfg.slack, attempts),
        })
    }

    /// Sends `text` as the answer to `m`, retrying transient failures.
    pub async fn reply(&self, m: &Inbound, text: &str) -> Result<(), OutboundError> {
        match m.platform {
            Platform::Dingtalk => self.dingtalk.reply(&m.reply, text).await,
            Platform::Feishu => self.feishu.reply(&m.reply, text).await,
            Platform::Wecom => self.wecom.reply(&m.reply, text).await,
            Platform::Slack => self.slack.reply(&m.reply, text).await,
        }
    }

    /// Platforms with a notification robot configured.
    pub fn can_notify(&self, p: Platform) -> bool {
        match p {
            Platform::Dingtalk => self.dingtalk.can_notify(),
            Platform::Feishu => self.feishu.can_notify(),
            Platform::Wecom => self.wecom.can_notify(),
            Platform::Slack => false,
        }
    }

    /// One robot notification, waiting for the platform's per-minute limit.
    pub async fn notify(&self, p: Platform, title: &str, text: &str) -> Result<(), OutboundError> {
        match p {
            Platform::Dingtalk => self.dingtalk.notify(title, text).await,
            Platform::Feishu => self.feishu.notify(&with_title(title, text)).await,
            Platform::Wecom => self.wecom.notify(&with_title(title, text)).await,
            Platform::Slack => Err(OutboundError::Fatal(
                "Slack has no notification robot here".into(),
            )),
        }
    }
}

fn with_title(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_owned()
    } else {
        format!("{title}\n{text}")
    }
}
