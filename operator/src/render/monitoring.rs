//! `spec.monitoring`: the Prometheus Operator's ServiceMonitor (scrapes the
//! runtime Service's `metrics` port) and PrometheusRule (the alerts of
//! alerts.rs), both named after the bot and carrying `spec.monitoring.labels`
//! so a Prometheus `serviceMonitorSelector`/`ruleSelector` picks them up;
//! and the Grafana dashboard ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::alerts::rule_group;
use super::child_meta;
use crate::crd::monitoring::{
    PrometheusRule, PrometheusRuleSpec, ServiceMonitor, ServiceMonitorEndpoints,
    ServiceMonitorSelector, ServiceMonitorSpec,
};
use crate::crd::{ClawdBot, MonitoringSpec};
use crate::labels;

/// The port name the runtime Service gives `/metrics`.
pub const METRICS_PORT_NAME: &str = "metrics";

fn enabled(cb: &ClawdBot) -> Option<&MonitoringSpec> {
    cb.spec.monitoring.as_ref().filter(|m| m.enabled)
}

/// The operator's labels plus the user's; ours win on a clash, as on pods,
/// so the objects stay recognisable as this bot's.
fn meta(
    cb: &ClawdBot,
    m: &MonitoringSpec,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let mut meta = child_meta(cb, cb.name_any(), labels::RUNTIME);
    let mut all: BTreeMap<String, String> = m.labels.clone();
    all.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(all);
    meta
}

pub fn service_monitor(cb: &ClawdBot) -> Option<ServiceMonitor> {
    let m = enabled(cb)?;
    Some(ServiceMonitor {
        metadata: meta(cb, m),
        spec: ServiceMonitorSpec {
            selector: ServiceMonitorSelector {
                match_labels: Some(labels::selector(&cb.name_any())),
                ..ServiceMonitorSelector::default()
            },
            endpoints: vec![ServiceMonitorEndpoints {
                port: Some(METRICS_PORT_NAME.into()),
                path: Some("/metrics".into()),
                interval: m.scrape_interval.clone(),
                ..ServiceMonitorEndpoints::default()
            }],
            ..ServiceMonitorSpec::default()
        },
        status: None,
    })
}

pub fn prometheus_rule(cb: &ClawdBot) -> Option<PrometheusRule> {
    let m = enabled(cb)?;
    let ns = cb.namespace().unwrap_or_else(|| "default".into());
    Some(PrometheusRule {
        metadata: meta(cb, m),
        spec: PrometheusRuleSpec {
            groups: Some(vec![rule_group(&ns, &cb.name_any(), m)]),
        },
        status: None,
    })
}

/// The dashboard of deploy/grafana/ (made by scripts/gen-dashboard.py),
/// where a user picks the namespace and bot.
pub const DASHBOARD_JSON: &str = include_str!("../../../deploy/grafana/clawdbot-dashboard.json");

/// Grafana's sidecar loads ConfigMaps carrying this label.
pub const GRAFANA_DASHBOARD_LABEL: &str = "grafana_dashboard";

pub fn dashboard_config_map_name(bot: &str) -> String {
    format!("{bot}-dashboard")
}

/// The dashboard fixed to one bot: its own uid (a hash, as Grafana allows
/// 40 characters) and title, and the namespace/bot pickers turned into
/// hidden constants.
pub fn bot_dashboard(ns: &str, bot: &str) -> Value {
    let mut d: Value = serde_json::from_str(DASHBOARD_JSON).expect("the bundled dashboard is JSON");
    let digest = Sha256::digest(format!("{ns}/{bot}").as_bytes());
    d["uid"] = json!(format!("clawdbot-{}", hex::encode(&digest[..8])));
    d["title"] = json!(format!("ClawdBot {ns}/{bot}"));
    for v in d["templating"]["list"].as_array_mut().into_iter().flatten() {
        let value = match v["name"].as_str() {
            Some("namespace") => ns,
            Some("bot") => bot,
            _ => continue,
        };
        let label = v["label"].clone();
        *v = json!({
            "name": v["name"], "label": label, "type": "constant", "hide": 2,
            "query": value, "current": {"text": value, "value": value},
        });
    }
    d
}

pub fn grafana_dashboard(cb: &ClawdBot) -> Option<ConfigMap> {
    cb.spec
        .monitoring
        .as_ref()
        .filter(|m| m.grafana_dashboard)?;
    let (ns, bot) = (
        cb.namespace().unwrap_or_else(|| "default".into()),
        cb.name_any(),
    );
    let mut meta = child_meta(cb, dashboard_config_map_name(&bot), labels::RUNTIME);
    meta.labels
        .get_or_insert_default()
        .insert(GRAFANA_DASHBOARD_LABEL.into(), "1".into());
    let json = serde_json::to_string(&bot_dashboard(&ns, &bot)).expect("JSON");
    Some(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            format!("clawdbot-{ns}-{bot}.json"),
            json,
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bot_dashboard_is_fixed_to_its_bot() {
        let d = bot_dashboard("prod", "hello");
        assert_eq!(d["title"], "ClawdBot prod/hello");
        let uid = d["uid"].as_str().unwrap();
        assert!(uid.starts_with("clawdbot-") && uid.len() <= 40, "{uid}");
        assert_ne!(bot_dashboard("prod", "other")["uid"], d["uid"]);
        let vars = d["templating"]["list"].as_array().unwrap();
        let var = |n: &str| vars.iter().find(|v| v["name"] == n).unwrap();
        assert_eq!(var("namespace")["type"], "constant");
        assert_eq!(var("namespace")["query"], "prod");
        assert_eq!(var("bot")["query"], "hello");
        assert_eq!(var("datasource")["type"], "datasource");
        // The panels are the bundled dashboard's.
        let bundled: Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        assert_eq!(d["panels"], bundled["panels"]);
    }
}
