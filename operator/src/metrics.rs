//! The operator's own Prometheus metrics.

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
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
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
