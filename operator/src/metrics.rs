//! The operator's own Prometheus metrics.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub duration: Histogram,
    pub errors: IntCounterVec,
    pub managed: IntGaugeVec,
    pub leader: IntGauge,
    conditions: IntGaugeVec,
    /// The condition types each bot's series exist for, so a condition that
    /// disappears (or a deleted bot) leaves no stale series behind.
    bot_conditions: Mutex<HashMap<(String, String), Vec<String>>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("clawdbot_operator_reconcile_total", "Reconciles by result."),
            &["result"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "clawdbot_operator_reconcile_duration_seconds",
                "Reconcile duration.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "clawdbot_operator_reconcile_errors_total",
                "Reconcile errors by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let managed = IntGaugeVec::new(
            Opts::new(
                "clawdbot_operator_managed_objects",
                "Objects the operator manages, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "clawdbot_operator_leader",
            "1 while this replica holds the leader Lease.",
        )
        .expect("valid metric");
        let conditions = IntGaugeVec::new(
            Opts::new(
                "clawdbot_operator_bot_condition",
                "1 while the ClawdBot's status condition is True, 0 while it is False or Unknown.",
            ),
            &["namespace", "clawdbot", "condition"],
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(conditions.clone()),
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(managed.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            reconciles,
            duration,
            errors,
            managed,
            leader,
            conditions,
            bot_conditions: Mutex::new(HashMap::new()),
        }
    }

    /// The bot's conditions as `clawdbot_operator_bot_condition` series (what
    /// the `ClawdBotDegraded` alert reads).
    pub fn set_conditions(&self, ns: &str, bot: &str, conditions: &[Condition]) {
        let types: Vec<String> = conditions.iter().map(|c| c.type_.clone()).collect();
        let old = self
            .bot_conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_owned(), bot.to_owned()), types.clone());
        for gone in old.iter().flatten().filter(|t| !types.contains(t)) {
            let _ = self.conditions.remove_label_values(&[ns, bot, gone]);
        }
        for c in conditions {
            self.conditions
                .with_label_values(&[ns, bot, c.type_.as_str()])
                .set(i64::from(c.status == "True"));
        }
    }

    /// A deleted bot's condition series go with it.
    pub fn forget_bot(&self, ns: &str, bot: &str) {
        let old = self
            .bot_conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.to_owned(), bot.to_owned()));
        for t in old.iter().flatten() {
            let _ = self.conditions.remove_label_values(&[ns, bot, t]);
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    fn series(m: &Metrics) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with("clawdbot_operator_bot_condition{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn condition_series_follow_the_status_and_go_with_the_bot() {
        let m = Metrics::new();
        m.set_conditions(
            "ns",
            "bot",
            &[cond("Ready", "False"), cond("Degraded", "True")],
        );
        m.set_conditions("ns", "other", &[cond("Ready", "True")]);
        assert_eq!(
            series(&m),
            [
                r#"clawdbot_operator_bot_condition{clawdbot="bot",condition="Degraded",namespace="ns"} 1"#,
                r#"clawdbot_operator_bot_condition{clawdbot="bot",condition="Ready",namespace="ns"} 0"#,
                r#"clawdbot_operator_bot_condition{clawdbot="other",condition="Ready",namespace="ns"} 1"#,
            ]
        );
        // Degraded is no longer reported: its series goes, not stays at 1.
        m.set_conditions("ns", "bot", &[cond("Ready", "True")]);
        assert_eq!(
            series(&m),
            [
                r#"clawdbot_operator_bot_condition{clawdbot="bot",condition="Ready",namespace="ns"} 1"#,
                r#"clawdbot_operator_bot_condition{clawdbot="other",condition="Ready",namespace="ns"} 1"#,
            ]
        );
        m.forget_bot("ns", "bot");
        assert_eq!(
            series(&m),
            [
                r#"clawdbot_operator_bot_condition{clawdbot="other",condition="Ready",namespace="ns"} 1"#
            ]
        );
    }
}
