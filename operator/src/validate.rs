//! Checks of a ClawdBot beyond what the schema says, run before anything is
//! applied. The API server enforces the schema and CEL rules too, but not
//! every cluster (or emulator) does, and the runtime's own config validation
//! catches what neither can express. Every error names the field.

use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::crd::{ClawdBot, ClawdBotSpec, ModelBackend, is_quantity, postgres_major};
use crate::labels;
use crate::render::runtime_config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the object root, e.g. `spec.model.endpoint`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Reads a ClawdBot out of the raw object. A wrong type anywhere in the
/// spec becomes one error naming the field, instead of a watch that fails
/// for every ClawdBot in the cluster.
pub fn parse(obj: &DynamicObject) -> Result<ClawdBot, FieldError> {
    let spec = obj
        .data
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let spec = if spec.is_null() {
        serde_json::json!({})
    } else {
        spec
    };
    // The shape before spec.redis and spec.database became unions: said
    // plainly instead of an empty union.
    for part in ["redis", "database"] {
        if spec.get(part).and_then(|p| p.get("urlSecretRef")).is_some() {
            return Err(FieldError {
                field: format!("spec.{part}.urlSecretRef"),
                message: format!(
                    "moved to spec.{part}.external.urlSecretRef in this version (see \
                     docs/operator.md, \"Migrating\")"
                ),
            });
        }
    }
    let spec: ClawdBotSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        FieldError {
            field: if path == "." {
                "spec".into()
            } else {
                format!("spec.{path}")
            },
            message: e.into_inner().to_string(),
        }
    })?;
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    Ok(ClawdBot {
        metadata: obj.metadata.clone(),
        spec,
        status,
    })
}

pub fn validate(cb: &ClawdBot) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    let name = cb.name_any();
    if !is_dns_label(&name) {
        bad(
            "metadata.name",
            format!(
                "{name:?} must be a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters): it names the Service"
            ),
        );
    }
    let s = &cb.spec;
    if let Some(r) = s.replicas
        && !(0..=1000).contains(&r)
    {
        bad("spec.replicas", format!("{r} is outside 0..=1000"));
    }
    let m = &s.model;
    if m.backend == Some(ModelBackend::OpenAI) && m.endpoint.is_none() {
        bad(
            "spec.model.endpoint",
            "is required when model.backend is OpenAI".into(),
        );
    }
    if let Some(l) = &m.local {
        if l.persistent_volume_claim.is_some() && l.path.is_none() {
            bad(
                "spec.model.local.path",
                "is required with spec.model.local.persistentVolumeClaim (the file inside the claim)".into(),
            );
        }
        if let Some(n) = l.context_size
            && !(256..=131_072).contains(&n)
        {
            bad(
                "spec.model.local.contextSize",
                format!("{n} is outside 256..=131072"),
            );
        }
        if let Some(n) = l.parallel
            && !(1..=64).contains(&n)
        {
            bad(
                "spec.model.local.parallel",
                format!("{n} is outside 1..=64"),
            );
        }
        if let Some(sum) = &l.sha256
            && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bad(
                "spec.model.local.sha256",
                "must be 64 hexadecimal digits".into(),
            );
        }
    }
    if let Some(k) = &s.knowledge
        && k.name.is_some() == k.persistent_volume_claim.is_some()
    {
        bad(
            "spec.knowledge",
            "needs exactly one of name (a ConfigMap) and persistentVolumeClaim".into(),
        );
    }
    if m.api_key_secret_ref.is_some() && m.endpoint.is_none() {
        bad(
            "spec.model.apiKeySecretRef",
            "needs spec.model.endpoint".into(),
        );
    }
    if let Some(e) = &m.endpoint
        && !is_http_url(e)
    {
        bad(
            "spec.model.endpoint",
            format!("{e:?} is not an http:// or https:// URL"),
        );
    }
    for (i, f) in m.fallbacks.iter().enumerate() {
        if !is_http_url(&f.endpoint) {
            bad(
                &format!("spec.model.fallbacks[{i}].endpoint"),
                format!("{:?} is not an http:// or https:// URL", f.endpoint),
            );
        }
    }
    if m.fallbacks.len() > 8 {
        bad("spec.model.fallbacks", "at most 8 fallbacks".into());
    }
    let ch = &s.channels;
    for (field, enabled, has_secret) in [
        (
            "spec.channels.dingtalk",
            ch.dingtalk.as_ref().is_some_and(|c| c.enabled),
            ch.dingtalk
                .as_ref()
                .is_some_and(|c| c.credentials_secret_ref.is_some()),
        ),
        (
            "spec.channels.feishu",
            ch.feishu.as_ref().is_some_and(|c| c.enabled),
            ch.feishu
                .as_ref()
                .is_some_and(|c| c.credentials_secret_ref.is_some()),
        ),
        (
            "spec.channels.wecom",
            ch.wecom.as_ref().is_some_and(|c| c.enabled),
            ch.wecom
                .as_ref()
                .is_some_and(|c| c.credentials_secret_ref.is_some()),
        ),
        (
            "spec.channels.slack",
            ch.slack.as_ref().is_some_and(|c| c.enabled),
            ch.slack
                .as_ref()
                .is_some_and(|c| c.credentials_secret_ref.is_some()),
        ),
    ] {
        if enabled && !has_secret {
            bad(
                &format!("{field}.credentialsSecretRef"),
                "an enabled channel needs credentialsSecretRef".into(),
            );
        }
    }
    if let Some(a) = &s.autoscaling {
        if a.max_replicas < 1 {
            bad("spec.autoscaling.maxReplicas", "must be at least 1".into());
        }
        if a.min_replicas.is_some_and(|min| min > a.max_replicas) {
            bad(
                "spec.autoscaling.minReplicas",
                "must not exceed maxReplicas".into(),
            );
        }
    }
    if let Some(d) = &s.disruption_budget
        && d.min_available.is_some()
        && d.max_unavailable.is_some()
    {
        bad(
            "spec.disruptionBudget",
            "set minAvailable or maxUnavailable, not both".into(),
        );
    }
    if let Some(i) = &s.ingress
        && i.enabled
    {
        match &i.host {
            None => bad(
                "spec.ingress.host",
                "an enabled ingress needs a host".into(),
            ),
            Some(h) if !is_dns_name(h) => {
                bad("spec.ingress.host", format!("{h:?} is not a DNS name"))
            }
            _ => {}
        }
    }
    state_errors(s, &name, &mut bad);
    if let Some(m) = &s.monitoring {
        let known = crate::render::alerts::alert_names();
        for (name, o) in &m.alerts {
            let field = format!("spec.monitoring.alerts.{name}");
            if !known.contains(&name.as_str()) {
                bad(
                    &field,
                    format!("no such alert; the alerts are {}", known.join(", ")),
                );
            }
            if o.threshold.is_some_and(|t| !t.is_finite() || t < 0.0) {
                bad(
                    &format!("{field}.threshold"),
                    "must be a number of 0 or more".into(),
                );
            }
        }
    }
    // The runtime's own rules, on the config this ClawdBot renders to.
    for issue in clawdbot_config::validate_without_credentials(&runtime_config(cb)) {
        bad(&spec_path_for_runtime_key(&issue.key), issue.why);
    }
    // The runtime's rules repeat some of ours: report each field once.
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.field.clone()));
    errors
}

/// `spec.redis` and `spec.database`: one member of each union, quantities
/// that parse, a PostgreSQL image whose tag names its major version, names
/// short enough for the managed children, and shared sessions whenever
/// more than one pod can serve.
fn state_errors(s: &ClawdBotSpec, name: &str, bad: &mut impl FnMut(&str, String)) {
    let mut quantity = |field: &str, q: &str| {
        if !is_quantity(q) {
            bad(field, format!("{q:?} is not a quantity (e.g. 1Gi, 500Mi)"));
        }
    };
    if let Some(p) = s
        .redis
        .as_ref()
        .and_then(|r| r.managed.as_ref())
        .and_then(|m| m.persistence.as_ref())
    {
        quantity("spec.redis.managed.persistence.size", &p.size);
    }
    if let Some(d) = &s.database {
        if let Some(m) = &d.managed {
            if let Some(size) = &m.size {
                quantity("spec.database.managed.size", size);
            }
            if let Some(v) = m.backup.as_ref().and_then(|b| b.volume.as_ref()) {
                quantity("spec.database.managed.backup.volume.size", &v.size);
            }
        }
        if let Some(c) = &d.cloud_native_pg {
            quantity("spec.database.cloudNativePG.storage.size", &c.storage.size);
        }
    }
    if let Some(r) = &s.redis {
        if r.managed.is_some() == r.external.is_some() {
            bad(
                "spec.redis",
                "set exactly one of spec.redis.managed and spec.redis.external".into(),
            );
        }
        if r.managed.is_some() && name.len() > labels::MAX_NAME_WITH_REDIS {
            bad(
                "metadata.name",
                format!(
                    "at most {} characters with spec.redis.managed (its StatefulSet is {name}-redis)",
                    labels::MAX_NAME_WITH_REDIS
                ),
            );
        }
    }
    if let Some(d) = &s.database {
        let set = [
            d.managed.is_some(),
            d.cloud_native_pg.is_some(),
            d.external.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            bad(
                "spec.database",
                "set exactly one of spec.database.managed, spec.database.cloudNativePG and spec.database.external".into(),
            );
        }
        if let Some(m) = &d.managed {
            if postgres_major(m.image()).is_none() {
                bad(
                    "spec.database.managed.image",
                    format!(
                        "{:?} has no tag starting with the PostgreSQL major version (e.g. postgres:17.6)",
                        m.image()
                    ),
                );
            }
            if let Some(b) = m.backup.as_ref().filter(|b| b.enabled)
                && let Some(sched) = &b.schedule
                && sched.split_whitespace().count() != 5
            {
                bad(
                    "spec.database.managed.backup.schedule",
                    format!("{sched:?} is not a five-field cron schedule (e.g. \"0 3 * * *\")"),
                );
            }
        }
        if (d.managed.is_some() || d.cloud_native_pg.is_some())
            && name.len() > labels::MAX_NAME_WITH_DATABASE
        {
            bad(
                "metadata.name",
                format!(
                    "at most {} characters with a managed database (its backup CronJob is {name}-db-backup)",
                    labels::MAX_NAME_WITH_DATABASE
                ),
            );
        }
    }
    if s.redis.is_none() {
        let replicas = s.replicas.unwrap_or(1);
        let autoscaled = s.autoscaling.as_ref().is_some_and(|a| a.enabled);
        if replicas > 1 || autoscaled {
            bad(
                "spec.redis",
                format!(
                    "is required with {}: without it each pod keeps its own in-memory sessions, \
                     which break as requests move between pods (set spec.redis.managed, or \
                     spec.redis.external with your Redis)",
                    if autoscaled {
                        "autoscaling".to_owned()
                    } else {
                        format!("{replicas} replicas")
                    }
                ),
            );
        }
    }
}

/// Runtime keys that the spec sets under another name.
fn renamed(key: &str) -> Option<String> {
    let map = [
        ("server.trusted_proxies", "spec.trustedProxies"),
        ("server.cors_allowed_origins", "spec.corsAllowedOrigins"),
        ("logs.retention_days", "spec.conversationLogs.retentionDays"),
        (
            "server.rate_limit.requests_per_second",
            "spec.rateLimit.requestsPerSecond",
        ),
        ("server.rate_limit.burst", "spec.rateLimit.burst"),
    ];
    map.iter()
        .find_map(|(from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

/// `model.max_tokens` -> `spec.model.maxTokens`, `dingtalk.enabled` ->
/// `spec.channels.dingtalk.enabled`.
fn spec_path_for_runtime_key(key: &str) -> String {
    if let Some(p) = renamed(key) {
        return p;
    }
    let camel: Vec<String> = key
        .split('.')
        .map(|seg| {
            let mut out = String::new();
            let mut upper = false;
            for c in seg.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect();
    match camel[0].as_str() {
        "dingtalk" | "feishu" | "wecom" | "slack" => format!("spec.channels.{}", camel.join(".")),
        _ => format!("spec.{}", camel.join(".")),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_dns_name(s: &str) -> bool {
    // Ingress hosts may start with one wildcard label.
    let s = s.strip_prefix("*.").unwrap_or(s);
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_keys_map_to_spec_fields() {
        assert_eq!(
            spec_path_for_runtime_key("model.max_tokens"),
            "spec.model.maxTokens"
        );
        assert_eq!(
            spec_path_for_runtime_key("dingtalk.enabled"),
            "spec.channels.dingtalk.enabled"
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_label("bot-1"));
        assert!(!is_dns_label("1bot"));
        assert!(!is_dns_label("Bot"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_name("bot.example.com"));
        assert!(!is_dns_name("bot..example"));
        assert!(is_dns_name("*.example.com"));
        assert!(!is_dns_name("a.*.example.com"));
    }
}
