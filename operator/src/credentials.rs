//! An enabled IM channel's credentials Secret, checked against the
//! runtime's own list of what that channel needs with this spec
//! (`clawdbot_config::required_channel_keys`): a key it lacks would make
//! every new pod refuse to start, so the operator names it instead.

use std::collections::BTreeSet;

use clawdbot_config::required_channel_keys;

use crate::crd::ClawdBot;
use crate::render::runtime_config;

/// The credentials Secret of a channel, by the runtime's section name.
fn secret_of<'a>(cb: &'a ClawdBot, channel: &str) -> Option<&'a str> {
    let ch = &cb.spec.channels;
    let r = match channel {
        "dingtalk" => ch.dingtalk.as_ref()?.credentials_secret_ref.as_ref(),
        "feishu" => ch.feishu.as_ref()?.credentials_secret_ref.as_ref(),
        "wecom" => ch.wecom.as_ref()?.credentials_secret_ref.as_ref(),
        "slack" => ch.slack.as_ref()?.credentials_secret_ref.as_ref(),
        _ => None,
    }?;
    Some(r.name.as_str())
}

/// One message per key an enabled channel needs and its Secret lacks.
/// `keys_of` gives the keys that hold a value of a Secret that was read
/// (None: missing or not read, which is reported elsewhere).
pub fn missing_channel_keys(
    cb: &ClawdBot,
    keys_of: impl Fn(&str) -> Option<BTreeSet<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in required_channel_keys(&runtime_config(cb)) {
        let Some((channel, leaf)) = r.key.split_once('.') else {
            continue;
        };
        if r.set {
            continue;
        }
        let Some(secret) = secret_of(cb, channel) else {
            continue;
        };
        let Some(keys) = keys_of(secret) else {
            continue;
        };
        // Environment names are read case-insensitively by the runtime.
        if !keys.iter().any(|k| k.eq_ignore_ascii_case(leaf)) {
            out.push(format!(
                "Secret {secret} (spec.channels.{channel}.credentialsSecretRef) has no {leaf}: \
                 {} is required {}",
                r.key, r.why
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ChannelsSpec, ClawdBotSpec, FeishuChannel, SecretRef};

    fn feishu(allow_unencrypted: bool) -> ClawdBot {
        let mut cb = ClawdBot::new(
            "bot",
            ClawdBotSpec {
                channels: ChannelsSpec {
                    feishu: Some(FeishuChannel {
                        enabled: true,
                        credentials_secret_ref: Some(SecretRef {
                            name: "feishu-creds".into(),
                        }),
                        allow_unencrypted,
                        ..FeishuChannel::default()
                    }),
                    ..ChannelsSpec::default()
                },
                ..ClawdBotSpec::default()
            },
        );
        cb.metadata.namespace = Some("ns".into());
        cb
    }

    fn keys(list: &[&str]) -> impl Fn(&str) -> Option<BTreeSet<String>> {
        let set: BTreeSet<String> = list.iter().map(|s| s.to_string()).collect();
        move |name| (name == "feishu-creds").then(|| set.clone())
    }

    #[test]
    fn a_feishu_webhook_secret_without_encrypt_key_is_named() {
        let got = missing_channel_keys(
            &feishu(false),
            keys(&["app_id", "app_secret", "verification_token"]),
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "Secret feishu-creds (spec.channels.feishu.credentialsSecretRef) has no encrypt_key"
            ),
            "{}",
            got[0]
        );
        // Accepted on purpose, or present (in any case): nothing to say.
        assert!(
            missing_channel_keys(
                &feishu(true),
                keys(&["app_id", "app_secret", "verification_token"])
            )
            .is_empty()
        );
        assert!(
            missing_channel_keys(
                &feishu(false),
                keys(&["APP_ID", "app_secret", "verification_token", "encrypt_key"])
            )
            .is_empty()
        );
        // A Secret not read (missing: reported as SecretNotFound) is not
        // guessed at.
        assert!(missing_channel_keys(&feishu(false), |_| None).is_empty());
    }

    #[test]
    fn every_missing_key_is_named() {
        let got = missing_channel_keys(&feishu(false), keys(&[]));
        let named: Vec<&str> = got
            .iter()
            .map(|m| {
                m.split(" has no ")
                    .nth(1)
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            named,
            ["app_id", "app_secret", "verification_token", "encrypt_key"]
        );
    }
}
