//! The operator's own Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
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
    /// The ClawdBots the controller watches: `conditions` is rebuilt from
    /// their status at each scrape (as kube-state-metrics does), so a
    /// deleted bot or a dropped condition leaves no stale series and no
    /// reconcile in flight can bring one back.
    /// The ClawdBot watch cache of each watched scope (a namespace, or "" for all).
    bots: Mutex<BTreeMap<String, Store<DynamicObject>>>,
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
            bots: Mutex::new(BTreeMap::new()),
        }
    }

    /// The watch cache of ClawdBots of one watched scope (a namespace, or
    /// "" for all of them); None while its watches are rebuilt.
    pub fn set_bot_store(&self, scope: &str, store: Option<Store<DynamicObject>>) {
        let mut bots = self.bots.lock().unwrap_or_else(|e| e.into_inner());
        match store {
            Some(s) => bots.insert(scope.to_owned(), s),
            None => bots.remove(scope),
        };
    }

    /// `clawdbot_operator_bot_condition` from each cached bot's
    /// `status.conditions` (what the `ClawdBotDegraded` alert reads).
    fn refresh_conditions(&self, bots: &BTreeMap<String, Store<DynamicObject>>) {
        self.conditions.reset();
        for bot in bots.values().flat_map(|s| s.state()) {
            let (ns, name) = (bot.namespace().unwrap_or_default(), bot.name_any());
            let conditions = bot
                .data
                .pointer("/status/conditions")
                .and_then(|c| c.as_array());
            for c in conditions.into_iter().flatten() {
                if let (Some(t), Some(st)) = (c["type"].as_str(), c["status"].as_str()) {
                    self.conditions
                        .with_label_values(&[ns.as_str(), name.as_str(), t])
                        .set(i64::from(st == "True"));
                }
            }
        }
    }

    pub fn render(&self) -> String {
        // The lock makes one scrape at a time rebuild and read the
        // condition series: two Prometheus replicas scraping together must
        // not see each other's reset.
        let bots = self.bots.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh_conditions(&bots);
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
    use kube::api::ApiResource;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;

    fn bot(name: &str, conditions: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "clawdbot.io/v1alpha1", "kind": "ClawdBot",
            "metadata": {"name": name, "namespace": "ns"},
            "status": {"conditions": conditions},
        }))
        .expect("bot")
    }

    fn series(m: &Metrics) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with("clawdbot_operator_bot_condition{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn condition_series_follow_the_cached_bots() {
        let ar = ApiResource {
            group: "clawdbot.io".into(),
            version: "v1alpha1".into(),
            api_version: "clawdbot.io/v1alpha1".into(),
            kind: "ClawdBot".into(),
            plural: "clawdbots".into(),
        };
        let mut w = Writer::<DynamicObject>::new(ar);
        let m = Metrics::new();
        m.set_bot_store("", Some(w.as_reader()));
        let degraded = bot(
            "bot",
            json!([{"type": "Ready", "status": "False"}, {"type": "Degraded", "status": "True"}]),
        );
        w.apply_watcher_event(&watcher::Event::Apply(degraded.clone()));
        w.apply_watcher_event(&watcher::Event::Apply(bot(
            "other",
            json!([{"type": "Ready", "status": "True"}]),
        )));
        assert_eq!(
            series(&m),
            [
                r#"clawdbot_operator_bot_condition{clawdbot="bot",condition="Degraded",namespace="ns"} 1"#,
                r#"clawdbot_operator_bot_condition{clawdbot="bot",condition="Ready",namespace="ns"} 0"#,
                r#"clawdbot_operator_bot_condition{clawdbot="other",condition="Ready",namespace="ns"} 1"#,
            ]
        );
        // Degraded no longer reported: its series goes, it does not stay at 1.
        w.apply_watcher_event(&watcher::Event::Apply(bot(
            "bot",
            json!([{"type": "Ready", "status": "True"}]),
        )));
        assert_eq!(series(&m).len(), 2);
        // A deleted bot's series go with it.
        w.apply_watcher_event(&watcher::Event::Delete(degraded));
        assert_eq!(
            series(&m),
            [
                r#"clawdbot_operator_bot_condition{clawdbot="other",condition="Ready",namespace="ns"} 1"#
            ]
        );
    }
}
