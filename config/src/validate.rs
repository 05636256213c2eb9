//! Checks that serde's types cannot express: ranges, URLs, addresses.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::types::{ModelBackend, RuntimeConfig};

/// One problem with a configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub key: String,
    pub why: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.why)
    }
}

/// Every problem found, so a user fixes them all in one go.
pub fn validate(cfg: &RuntimeConfig) -> Vec<Issue> {
    validate_inner(cfg, true)
}

/// As [`validate`], except that an enabled IM channel's credentials may be
/// missing: for a config whose secrets arrive later from the environment
/// (the operator renders the file; the Secret fills in the credentials).
pub fn validate_without_credentials(cfg: &RuntimeConfig) -> Vec<Issue> {
    validate_inner(cfg, false)
}

fn validate_inner(cfg: &RuntimeConfig, credentials: bool) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut bad = |key: &str, why: String| {
        issues.push(Issue {
            key: key.to_owned(),
            why,
        })
    };

    let log_file = &cfg.logging.file;
    if log_file
        .path
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        bad(
            "logging.file.path",
            "is empty: name a file, or leave it unset to log to stdout".into(),
        );
    }
    if !(1..=102_400).contains(&log_file.max_size_mb) {
        bad(
            "logging.file.max_size_mb",
            format!("{} is outside 1..=102400", log_file.max_size_mb),
        );
    }
    if !(1..=1000).contains(&log_file.max_files) {
        bad(
            "logging.file.max_files",
            format!("{} is outside 1..=1000", log_file.max_files),
        );
    }

    if cfg.server.listen.parse::<SocketAddr>().is_err() {
        bad(
            "server.listen",
            format!(
                "{:?} is not an address like 0.0.0.0:18789",
                cfg.server.listen
            ),
        );
    }
    if let Some(m) = &cfg.server.metrics_listen {
        match m.parse::<SocketAddr>() {
            Err(_) => bad(
                "server.metrics_listen",
                format!("{m:?} is not an address like 0.0.0.0:9090"),
            ),
            Ok(addr) if clashes(&cfg.server.listen, addr) => bad(
                "server.metrics_listen",
                format!("{m} takes server.listen's port: give metrics a port of their own"),
            ),
            Ok(_) => {}
        }
    }
    if cfg.server.data_dir.trim().is_empty() {
        bad("server.data_dir", "must not be empty".into());
    }
    if cfg.server.body_limit_bytes < 1024 {
        bad("server.body_limit_bytes", "must be at least 1024".into());
    }
    for (i, origin) in cfg.server.cors_allowed_origins.iter().enumerate() {
        if origin != "*" && !is_origin(origin) {
            bad(
                &format!("server.cors_allowed_origins[{i}]"),
                format!(
                    "{origin:?} is not `*` or an origin like https://chat.example.com (no path)"
                ),
            );
        }
    }
    let rl = &cfg.server.rate_limit;
    if !rl.requests_per_second.is_finite() || rl.requests_per_second < 0.0 {
        bad(
            "server.rate_limit.requests_per_second",
            "must be 0 (off) or positive".into(),
        );
    }
    if rl.burst == 0 {
        bad("server.rate_limit.burst", "must be at least 1".into());
    }
    for (i, p) in cfg.server.trusted_proxies.iter().enumerate() {
        if parse_net(p).is_none() {
            bad(
                &format!("server.trusted_proxies[{i}]"),
                format!("{p:?} is not an IP address or CIDR range"),
            );
        }
    }
    if cfg.server.drain_deadline_secs == 0 {
        bad("server.drain_deadline_secs", "must be at least 1".into());
    }

    let mut seen = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for (i, k) in cfg.auth.api_keys.iter().enumerate() {
        if k.key.expose().len() < 8 {
            bad(
                &format!("auth.api_keys[{i}].key"),
                "must be at least 8 characters".into(),
            );
        } else if k
            .key
            .expose()
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            bad(
                &format!("auth.api_keys[{i}].key"),
                "must not contain whitespace".into(),
            );
        }
        if !seen.insert(k.key.expose()) {
            bad(
                &format!("auth.api_keys[{i}].key"),
                "duplicates an earlier key".into(),
            );
        }
        let name = k.effective_name(i);
        let field = format!("auth.api_keys[{i}].name");
        if name.trim().is_empty() {
            bad(&field, "must not be empty".into());
        } else if name.starts_with(crate::types::IM_OWNER_PREFIX) {
            bad(
                &field,
                format!(
                    "{name:?}: the prefix {:?} is reserved for IM users' sessions",
                    crate::types::IM_OWNER_PREFIX
                ),
            );
        } else if !names.insert(name.clone()) {
            bad(
                &field,
                format!("{name:?} is the name of an earlier key; names must be unique"),
            );
        }
    }
    if cfg.auth.max_failures == 0 {
        bad("auth.max_failures", "must be at least 1".into());
    }
    if cfg.auth.failure_window_secs == 0 {
        bad("auth.failure_window_secs", "must be at least 1".into());
    }

    let m = &cfg.model;
    match (m.effective_backend(), &m.endpoint) {
        (ModelBackend::Openai, None) => bad(
            "model.endpoint",
            "is required when model.backend is openai (env MODEL_ENDPOINT)".into(),
        ),
        (_, Some(url)) if !is_http_url(url) => bad(
            "model.endpoint",
            format!("{url:?} is not an http:// or https:// URL"),
        ),
        _ => {}
    }
    if m.name.trim().is_empty() {
        bad("model.name", "must not be empty".into());
    }
    let k = &cfg.knowledge;
    for (key, v) in [
        ("knowledge.answer_threshold", k.answer_threshold),
        ("knowledge.context_threshold", k.context_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bad(key, format!("{v} is outside 0..=1"));
        }
    }
    if !(1..=20).contains(&k.context_entries) {
        bad(
            "knowledge.context_entries",
            format!("{} is outside 1..=20", k.context_entries),
        );
    }
    if k.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
        bad(
            "knowledge.path",
            "must not be empty (leave it unset for no FAQ)".into(),
        );
    }
    // The keyring's own entries; a key file is read (and its keys checked
    // against `active`) by check-config and at start.
    let e = &cfg.encryption;
    if let Some(keys) = &e.keys
        && let Err(why) = crate::encryption::parse_keyring(keys.expose())
    {
        bad("encryption.keys", why);
    }
    if e.enabled && e.active.as_deref().is_none_or(|a| a.trim().is_empty()) {
        bad(
            "encryption.active",
            "name the key new values are written with".into(),
        );
    }
    for (i, r) in cfg.dialog.rules.iter().enumerate() {
        let key = format!("dialog.rules[{i}]");
        if r.name.trim().is_empty() {
            bad(&format!("{key}.name"), "must not be empty".into());
        }
        if r.reply.trim().is_empty() {
            bad(&format!("{key}.reply"), "must not be empty".into());
        }
        if r.exact.is_empty() && r.regex.is_none() {
            bad(&key, "needs `exact` phrases or a `regex`".into());
        }
        if let Some(re) = &r.regex
            && let Err(e) = regex::Regex::new(re)
        {
            bad(
                &format!("{key}.regex"),
                format!("not a valid regular expression: {e}"),
            );
        }
    }
    let local = &m.local;
    if m.effective_backend() == ModelBackend::Local && local.path.trim().is_empty() {
        bad(
            "model.local.path",
            "is required when model.backend is local (env MODEL_PATH)".into(),
        );
    }
    if let Some(sum) = &local.sha256
        && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        bad(
            "model.local.sha256",
            "must be 64 hexadecimal digits (a SHA-256)".into(),
        );
    }
    if !(256..=131_072).contains(&local.context_size) {
        bad(
            "model.local.context_size",
            format!("{} is outside 256..=131072 tokens", local.context_size),
        );
    }
    if !(1..=64).contains(&local.parallel) {
        bad(
            "model.local.parallel",
            format!("{} is outside 1..=64", local.parallel),
        );
    }
    if local.queue > 4096 {
        bad(
            "model.local.queue",
            format!("{} is above 4096", local.queue),
        );
    }
    if local.threads == Some(0) {
        bad("model.local.threads", "must be at least 1".into());
    }
    for (i, f) in m.fallbacks.iter().enumerate() {
        if !is_http_url(&f.endpoint) {
            bad(
                &format!("model.fallbacks[{i}].endpoint"),
                format!("{:?} is not an http:// or https:// URL", f.endpoint),
            );
        }
        if let Some(var) = &f.api_key_env {
            if f.api_key.is_some() {
                bad(
                    &format!("model.fallbacks[{i}].api_key_env"),
                    "set api_key or api_key_env, not both".into(),
                );
            }
            if !is_env_name(var) || var.starts_with("CLAWDBOT_") {
                bad(
                    &format!("model.fallbacks[{i}].api_key_env"),
                    format!("{var:?} is not an environment variable name outside CLAWDBOT_*"),
                );
            }
        }
    }
    if let Some(t) = m.temperature
        && !(0.0..=2.0).contains(&t)
    {
        bad("model.temperature", format!("{t} is outside 0..=2"));
    }
    if m.max_tokens == Some(0) {
        bad("model.max_tokens", "must be at least 1".into());
    }
    for (key, v) in [
        ("model.timeout_secs", m.timeout_secs),
        ("model.connect_timeout_secs", m.connect_timeout_secs),
        ("model.stream_idle_timeout_secs", m.stream_idle_timeout_secs),
        ("model.retry_backoff_ms", m.retry_backoff_ms),
        (
            "model.circuit_breaker.open_secs",
            m.circuit_breaker.open_secs,
        ),
    ] {
        if v == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    if m.max_retries > 10 {
        bad("model.max_retries", "must be at most 10".into());
    }
    if m.circuit_breaker.failure_threshold == 0 {
        bad(
            "model.circuit_breaker.failure_threshold",
            "must be at least 1".into(),
        );
    }

    if cfg.sessions.ttl_secs == 0 {
        bad("sessions.ttl_secs", "must be at least 1".into());
    }
    if cfg.sessions.turn_wait_secs > 600 {
        bad("sessions.turn_wait_secs", "must be at most 600".into());
    }
    if cfg.sessions.max_memory_bytes < 65536 {
        bad(
            "sessions.max_memory_bytes",
            "must be at least 65536 (64 KiB)".into(),
        );
    }
    if !(1..=1_048_576).contains(&cfg.sessions.max_message_bytes) {
        bad(
            "sessions.max_message_bytes",
            "must be from 1 to 1048576 (1 MiB)".into(),
        );
    }
    if cfg.sessions.max_sessions == 0 {
        bad("sessions.max_sessions", "must be at least 1".into());
    }

    for (key, url, schemes) in [
        (
            "database.url",
            &cfg.database.url,
            &["postgres", "postgresql", "mysql", "mariadb", "sqlite"][..],
        ),
        ("redis.url", &cfg.redis.url, &["redis", "rediss"][..]),
    ] {
        if let Some(url) = url
            && !schemes
                .iter()
                .any(|s| url.expose().starts_with(&format!("{s}:")))
        {
            bad(
                key,
                format!("must start with one of {}", schemes.join(":, ") + ":"),
            );
        }
    }
    let r = &cfg.redis;
    if r.key_prefix.len() > 128
        || r.key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        bad(
            "redis.key_prefix",
            "must be at most 128 characters without whitespace".into(),
        );
    }
    for (key, v, max) in [
        ("redis.connect_timeout_ms", r.connect_timeout_ms, 60_000),
        ("redis.command_timeout_ms", r.command_timeout_ms, 60_000),
    ] {
        if !(1..=max).contains(&v) {
            bad(key, format!("must be between 1 and {max}"));
        }
    }
    if !(1_000..=600_000).contains(&r.lock_ttl_ms) {
        bad(
            "redis.lock_ttl_ms",
            "must be between 1000 and 600000".into(),
        );
    } else if r.lock_ttl_ms < 2 * r.command_timeout_ms {
        // The lock is extended when a third of it has passed; the extension
        // must land before the rest runs out.
        bad(
            "redis.lock_ttl_ms",
            "must be at least twice redis.command_timeout_ms".into(),
        );
    }
    let logs = &cfg.logs;
    if logs.retention_days == Some(0) {
        bad(
            "logs.retention_days",
            "must be at least 1 (leave it unset to keep everything)".into(),
        );
    }
    if !(1..=5000).contains(&logs.batch_size) {
        bad("logs.batch_size", "must be from 1 to 5000".into());
    }
    if !(1..=60_000).contains(&logs.flush_interval_ms) {
        bad("logs.flush_interval_ms", "must be from 1 to 60000".into());
    }
    if logs.queue_capacity == 0 {
        bad("logs.queue_capacity", "must be at least 1".into());
    }
    if logs
        .spill_file
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        bad(
            "logs.spill_file",
            "must not be empty (leave it unset for the default)".into(),
        );
    }
    if logs.max_retry_backoff_ms < 50 {
        bad("logs.max_retry_backoff_ms", "must be at least 50".into());
    }
    validate_channels(cfg, credentials, &mut bad);
    issues
}

/// A credential key an enabled channel needs with this config (its mode,
/// reply format), whether it is set, and why it is needed. The operator
/// checks the same list against a channel's Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredKey {
    pub key: &'static str,
    pub set: bool,
    pub why: &'static str,
}

/// Every [`RequiredKey`] of the enabled channels; a disabled channel needs
/// nothing, so half-filled sections are fine.
pub fn required_channel_keys(cfg: &RuntimeConfig) -> Vec<RequiredKey> {
    let filled = |s: &Option<crate::Secret>| s.as_ref().is_some_and(|s| !s.expose().is_empty());
    let filled_str = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());

    let (d, f, w, s) = (&cfg.dingtalk, &cfg.feishu, &cfg.wecom, &cfg.slack);
    /// When the keys are needed, why, and each key with whether it is set.
    type Required<'a> = (bool, &'static str, &'a [(&'static str, bool)]);
    let required: [Required; 7] = [
        (
            d.enabled,
            "when dingtalk.enabled is true (it signs callbacks and gets reply tokens)",
            &[
                ("dingtalk.app_secret", filled(&d.app_secret)),
                ("dingtalk.app_key", filled_str(&d.app_key)),
            ],
        ),
        (
            d.enabled && d.reply_format == crate::types::DingTalkReplyFormat::ActionCard,
            "when dingtalk.reply_format is action_card",
            &[("dingtalk.action_card_url", filled_str(&d.action_card_url))],
        ),
        (
            f.enabled,
            "when feishu.enabled is true (replies need a tenant token)",
            &[
                ("feishu.app_id", filled_str(&f.app_id)),
                ("feishu.app_secret", filled(&f.app_secret)),
            ],
        ),
        (
            f.enabled && f.mode == crate::types::FeishuMode::Webhook,
            "when feishu.mode is webhook (every event carries it)",
            &[("feishu.verification_token", filled(&f.verification_token))],
        ),
        (
            f.enabled && f.mode == crate::types::FeishuMode::Webhook && !f.allow_unencrypted,
            "when feishu.mode is webhook: without it events are plaintext, proven only by a \
             token in their body and never too old to replay (feishu.allow_unencrypted: true \
             accepts that)",
            &[("feishu.encrypt_key", filled(&f.encrypt_key))],
        ),
        (
            w.enabled,
            "when wecom.enabled is true",
            &[
                ("wecom.corp_id", filled_str(&w.corp_id)),
                ("wecom.agent_id", filled_str(&w.agent_id)),
                ("wecom.secret", filled(&w.secret)),
                ("wecom.token", filled(&w.token)),
                ("wecom.encoding_aes_key", filled(&w.encoding_aes_key)),
            ],
        ),
        (
            s.enabled,
            "when slack.enabled is true",
            &[
                ("slack.signing_secret", filled(&s.signing_secret)),
                ("slack.bot_token", filled(&s.bot_token)),
            ],
        ),
    ];
    required
        .into_iter()
        .filter(|(applies, _, _)| *applies)
        .flat_map(|(_, why, keys)| {
            keys.iter()
                .map(move |&(key, set)| RequiredKey { key, set, why })
        })
        .collect()
}

/// An enabled channel must have what it needs to verify deliveries and to
/// reply.
fn validate_channels(cfg: &RuntimeConfig, credentials: bool, bad: &mut impl FnMut(&str, String)) {
    if credentials {
        for r in required_channel_keys(cfg) {
            if !r.set {
                bad(r.key, format!("is required {}", r.why));
            }
        }
    }
    let (d, f, w, s) = (&cfg.dingtalk, &cfg.feishu, &cfg.wecom, &cfg.slack);
    if let Some(k) = &w.encoding_aes_key
        && !k.expose().is_empty()
        && !is_encoding_aes_key(k.expose())
    {
        bad(
            "wecom.encoding_aes_key",
            "must be the 43-character EncodingAESKey from the WeCom console".into(),
        );
    }

    for (key, url) in [
        ("dingtalk.api_base", Some(d.api_base.as_str())),
        ("dingtalk.action_card_url", d.action_card_url.as_deref()),
        (
            "dingtalk.webhook_url",
            d.webhook_url.as_ref().map(|u| u.expose()),
        ),
        ("feishu.api_base", Some(f.api_base.as_str())),
        (
            "feishu.notify_webhook_url",
            f.notify_webhook_url.as_ref().map(|u| u.expose()),
        ),
        ("wecom.api_base", Some(w.api_base.as_str())),
        (
            "wecom.robot_webhook_url",
            w.robot_webhook_url.as_ref().map(|u| u.expose()),
        ),
        ("slack.api_base", Some(s.api_base.as_str())),
    ] {
        if let Some(url) = url
            && !is_http_url(url)
        {
            // The URL may hold a credential (a robot's access token): never echo it.
            bad(key, "is not an http:// or https:// URL".into());
        }
    }
    for (key, secs) in [
        ("dingtalk.timestamp_window_secs", d.timestamp_window_secs),
        ("feishu.timestamp_window_secs", f.timestamp_window_secs),
        ("wecom.timestamp_window_secs", w.timestamp_window_secs),
        ("slack.timestamp_window_secs", s.timestamp_window_secs),
    ] {
        if secs == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    for (key, n) in [
        ("dingtalk.replies_per_second", d.replies_per_second),
        ("dingtalk.notify_per_minute", d.notify_per_minute),
        ("feishu.replies_per_second", f.replies_per_second),
        ("feishu.notify_per_minute", f.notify_per_minute),
        ("wecom.replies_per_second", w.replies_per_second),
        ("wecom.notify_per_minute", w.notify_per_minute),
        ("slack.replies_per_second", s.replies_per_second),
    ] {
        if n == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    let c = &cfg.channels;
    if c.body_limit_bytes < 1024 {
        bad("channels.body_limit_bytes", "must be at least 1024".into());
    }
    if c.processing_ttl_secs == 0 {
        bad("channels.processing_ttl_secs", "must be at least 1".into());
    }
    if c.dedupe_ttl_secs < 3600 {
        bad(
            "channels.dedupe_ttl_secs",
            "must be at least 3600 (platforms retry for hours)".into(),
        );
    }
    if c.claim_lease_secs < 5 {
        bad("channels.claim_lease_secs", "must be at least 5".into());
    }
    if c.workers == 0 {
        bad("channels.workers", "must be at least 1".into());
    }
    if c.reply_attempts == 0 {
        bad("channels.reply_attempts", "must be at least 1".into());
    }
    if c.notify_queue == 0 {
        bad("channels.notify_queue", "must be at least 1".into());
    }
}

/// 43 characters of standard base64 (no padding) that decode to 32 bytes.
fn is_encoding_aes_key(k: &str) -> bool {
    k.len() == 43
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// `IpNet` from `10.0.0.0/8` or a bare address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains('/') && !rest.contains(char::is_whitespace)
}

/// Whether binding `metrics` would fail because `listen` holds the same
/// port on the same or an overlapping (unspecified) address.
fn clashes(listen: &str, metrics: SocketAddr) -> bool {
    listen.parse::<SocketAddr>().is_ok_and(|l| {
        l.port() == metrics.port()
            && metrics.port() != 0
            && (l.ip() == metrics.ip() || l.ip().is_unspecified() || metrics.ip().is_unspecified())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&RuntimeConfig::default()), vec![]);
    }

    #[test]
    fn each_problem_names_its_key() {
        let mut c = RuntimeConfig::default();
        c.server.listen = "nope".into();
        c.model.temperature = Some(3.0);
        c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "garbage".into()];
        c.server.cors_allowed_origins = vec!["https://a.example/path".into()];
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "server.cors_allowed_origins[0]",
                "server.trusted_proxies[1]",
                "model.temperature"
            ]
        );
    }

    #[test]
    fn api_key_names_are_unique_and_not_im_owners() {
        use crate::{ApiKey, Scope, Secret};
        let key = |k: &str, name: Option<&str>| ApiKey {
            key: Secret::new(k),
            scope: Scope::User,
            name: name.map(String::from),
        };
        let mut c = RuntimeConfig::default();
        c.auth.api_keys = vec![
            key("aaaaaaaa1", Some("ci")),
            key("aaaaaaaa2", None),
            key("aaaaaaaa3", Some("key-2")),
            key("aaaaaaaa4", Some("im:dingtalk")),
            key("aaaaaaaa5", Some("ci")),
            key("aaaaaaaa6", Some(" ")),
        ];
        let issues = validate(&c);
        let by_key: Vec<(&str, &str)> = issues
            .iter()
            .map(|i| (i.key.as_str(), i.why.as_str()))
            .collect();
        assert_eq!(by_key.len(), 4, "{by_key:?}");
        assert!(by_key[0].0 == "auth.api_keys[2].name" && by_key[0].1.contains("\"key-2\""));
        assert!(by_key[1].0 == "auth.api_keys[3].name" && by_key[1].1.contains("reserved"));
        assert!(by_key[2].0 == "auth.api_keys[4].name" && by_key[2].1.contains("unique"));
        assert!(by_key[3].0 == "auth.api_keys[5].name" && by_key[3].1.contains("empty"));
        c.auth.api_keys.truncate(2);
        assert_eq!(validate(&c), vec![]);
    }

    #[test]
    fn feishu_webhooks_need_an_encrypt_key_unless_plaintext_is_accepted() {
        use crate::{FeishuMode, Secret};
        let mut c = RuntimeConfig::default();
        c.feishu.enabled = true;
        c.feishu.app_id = Some("cli_a".into());
        c.feishu.app_secret = Some(Secret::new("app-secret"));
        c.feishu.verification_token = Some(Secret::new("token"));
        let issues = validate(&c);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, "feishu.encrypt_key");
        assert!(issues[0].why.contains("allow_unencrypted"), "{}", issues[0]);
        // Secrets from the environment later: not checked here.
        assert_eq!(validate_without_credentials(&c), vec![]);
        c.feishu.allow_unencrypted = true;
        assert_eq!(validate(&c), vec![]);
        c.feishu.allow_unencrypted = false;
        c.feishu.encrypt_key = Some(Secret::new("encrypt-key"));
        assert_eq!(validate(&c), vec![]);
        // The long connection needs none.
        c.feishu.encrypt_key = None;
        c.feishu.mode = FeishuMode::Websocket;
        c.feishu.verification_token = None;
        assert_eq!(validate(&c), vec![]);
    }

    #[test]
    fn metrics_listen_is_an_address_other_than_listen() {
        let mut c = RuntimeConfig::default();
        c.server.metrics_listen = Some("0.0.0.0:9090".into());
        assert_eq!(validate(&c), vec![]);
        c.server.metrics_listen = Some("9090".into());
        assert_eq!(validate(&c)[0].key, "server.metrics_listen");
        for clash in ["0.0.0.0:18789", "127.0.0.1:18789"] {
            c.server.metrics_listen = Some(clash.into());
            let issues = validate(&c);
            assert_eq!(issues[0].key, "server.metrics_listen", "{clash}");
            assert!(
                issues[0].why.contains("port of their own"),
                "{}",
                issues[0].why
            );
        }
        // Another address on the same port is fine when neither is 0.0.0.0.
        c.server.listen = "127.0.0.1:18789".into();
        c.server.metrics_listen = Some("127.0.0.2:18789".into());
        assert_eq!(validate(&c), vec![]);
    }

    #[test]
    fn openai_backend_needs_an_endpoint() {
        let mut c = RuntimeConfig::default();
        c.model.backend = Some(ModelBackend::Openai);
        assert_eq!(validate(&c)[0].key, "model.endpoint");
        c.model.endpoint = Some("ftp://x".into());
        assert!(validate(&c)[0].why.contains("not an http"));
        c.model.endpoint = Some("http://127.0.0.1:9/v1".into());
        assert!(validate(&c).is_empty());
    }

    #[test]
    fn local_model_settings_are_checked() {
        let mut c = RuntimeConfig::default();
        assert!(validate(&c).is_empty(), "the defaults are valid");
        c.model.backend = Some(ModelBackend::Local);
        c.model.local.path = " ".into();
        c.model.local.sha256 = Some("abc".into());
        c.model.local.context_size = 100;
        c.model.local.parallel = 0;
        c.model.local.queue = 5000;
        c.model.local.threads = Some(0);
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "model.local.path",
                "model.local.sha256",
                "model.local.context_size",
                "model.local.parallel",
                "model.local.queue",
                "model.local.threads",
            ]
        );
        // `auto` without a file is fine: it falls back to `none`.
        c.model.backend = Some(ModelBackend::Auto);
        assert_eq!(validate(&c)[0].key, "model.local.sha256");
    }

    #[test]
    fn knowledge_and_dialog_rules_are_checked() {
        use crate::DialogRule;
        let mut c = RuntimeConfig::default();
        c.knowledge.answer_threshold = 1.5;
        c.knowledge.context_entries = 0;
        c.knowledge.path = Some(" ".into());
        c.dialog.rules = vec![
            DialogRule {
                name: "hours".into(),
                exact: vec![],
                regex: Some("(unclosed".into()),
                reply: "9-6".into(),
            },
            DialogRule {
                name: "".into(),
                exact: vec![],
                regex: None,
                reply: "".into(),
            },
        ];
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "knowledge.answer_threshold",
                "knowledge.context_entries",
                "knowledge.path",
                "dialog.rules[0].regex",
                "dialog.rules[1].name",
                "dialog.rules[1].reply",
                "dialog.rules[1]",
            ]
        );
    }

    #[test]
    fn redis_settings_are_checked() {
        let mut c = RuntimeConfig::default();
        c.redis.key_prefix = "has space:".into();
        c.redis.lock_ttl_ms = 999;
        c.redis.command_timeout_ms = 0;
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "redis.key_prefix",
                "redis.command_timeout_ms",
                "redis.lock_ttl_ms"
            ]
        );
        let mut c = RuntimeConfig::default();
        c.redis.lock_ttl_ms = 1_000;
        c.redis.command_timeout_ms = 600;
        assert!(validate(&c)[0].why.contains("twice"));
    }

    #[test]
    fn log_file_keys_are_checked() {
        let mut c = RuntimeConfig::default();
        c.logging.file.path = Some(" ".into());
        c.logging.file.max_size_mb = 0;
        c.logging.file.max_files = 1001;
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "logging.file.path",
                "logging.file.max_size_mb",
                "logging.file.max_files"
            ]
        );
        c.logging.file = crate::LogFileConfig {
            path: Some("/var/log/clawdbot/bot-runtime.log".into()),
            max_size_mb: 1,
            max_files: 1,
        };
        assert!(validate(&c).is_empty());
    }

    #[test]
    fn log_writer_keys_are_checked() {
        let mut c = RuntimeConfig::default();
        c.logs.retention_days = Some(0);
        c.logs.batch_size = 0;
        c.logs.flush_interval_ms = 0;
        c.logs.queue_capacity = 0;
        c.logs.spill_file = Some(" ".into());
        c.logs.max_retry_backoff_ms = 1;
        let keys: Vec<_> = validate(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "logs.retention_days",
                "logs.batch_size",
                "logs.flush_interval_ms",
                "logs.queue_capacity",
                "logs.spill_file",
                "logs.max_retry_backoff_ms"
            ]
        );
    }

    #[test]
    fn parses_networks_and_bare_addresses() {
        assert!(parse_net("10.0.0.0/8").is_some());
        assert!(parse_net("::1").is_some());
        assert!(parse_net("127.0.0.1").is_some());
        assert!(parse_net("1.2.3").is_none());
    }
}
