//! The Prometheus Operator's `ServiceMonitor` and `PrometheusRule`
//! (`monitoring.coreos.com/v1`), generated with kopium from the upstream
//! CRDs in tests/operator/crds/ by scripts/gen-monitoring-types.sh. Do not
//! edit the generated files by hand; regenerate them.

#[allow(clippy::all, clippy::pedantic)]
pub mod prometheusrule;
#[allow(clippy::all, clippy::pedantic)]
pub mod servicemonitor;

pub use prometheusrule::{
    PrometheusRule, PrometheusRuleGroups, PrometheusRuleGroupsRules, PrometheusRuleSpec,
};
pub use servicemonitor::{
    ServiceMonitor, ServiceMonitorEndpoints, ServiceMonitorSelector, ServiceMonitorSpec,
};
