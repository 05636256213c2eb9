//! `spec.monitoring`: the Prometheus Operator's ServiceMonitor (scrapes the
//! runtime Service's `metrics` port) and PrometheusRule (the alerts of
//! alerts.rs), both named after the bot and carrying `spec.monitoring.labels`
//! so a Prometheus `serviceMonitorSelector`/`ruleSelector` picks them up.

use std::collections::BTreeMap;

use kube::ResourceExt;

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
