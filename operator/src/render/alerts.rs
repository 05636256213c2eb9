//! The alert rules of one ClawdBot: PromQL over the runtime's own series
//! (and kube-state-metrics' for replicas), each with a runbook page in
//! docs/runbooks/. Thresholds, `for` durations and rate windows have
//! defaults here and can be overridden per alert in `spec.monitoring.alerts`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::MonitoringSpec;
use crate::crd::monitoring::{PrometheusRuleGroups, PrometheusRuleGroupsRules};

/// Where `runbook_url` points unless `spec.monitoring.runbookBaseUrl` says
/// otherwise: the pages in docs/runbooks/ of the project's repository.
pub const DEFAULT_RUNBOOK_BASE: &str =
    "https://github.com/clawdbot/clawdbot/blob/main/docs/runbooks";

/// The chat routes whose latency users feel (web chat API and OpenAI API).
const CHAT_ROUTES: &str = "/api/v1/chat|/v1/chat/completions";

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertDefaults {
    pub threshold: f64,
    pub for_: &'static str,
    pub window: &'static str,
}

/// One alert: its name, severity, defaults and how its expression is built
/// from the series selector, rate window and threshold.
pub struct Alert {
    pub name: &'static str,
    pub severity: &'static str,
    pub defaults: AlertDefaults,
    expr: fn(&Selectors, &str, f64) -> String,
    summary: &'static str,
    description: &'static str,
}

/// Label matchers picking one bot's series: the runtime's (as the
/// ServiceMonitor labels them) and kube-state-metrics' Deployment series.
pub struct Selectors {
    pub runtime: String,
    pub deployment: String,
}

impl Selectors {
    pub fn new(ns: &str, bot: &str) -> Self {
        Self {
            runtime: format!(r#"namespace="{ns}",service="{bot}""#),
            deployment: format!(r#"namespace="{ns}",deployment="{bot}""#),
        }
    }
}

const fn d(threshold: f64, for_: &'static str, window: &'static str) -> AlertDefaults {
    AlertDefaults {
        threshold,
        for_,
        window,
    }
}

pub const ALERTS: &[Alert] = &[
    Alert {
        name: "ClawdBotHighLatency",
        severity: "warning",
        defaults: d(0.5, "5m", "5m"),
        expr: |s, w, t| {
            format!(
                "(histogram_quantile(0.95, sum by (le) (rate(clawdbot_model_time_to_first_token_seconds_bucket{{{r}}}[{w}]))) > {t})\n\
                 or\n\
                 (histogram_quantile(0.95, sum by (le) (rate(clawdbot_http_request_duration_seconds_bucket{{{r},route=~\"{CHAT_ROUTES}\",stream=\"true\"}}[{w}]))) > {t})",
                r = s.runtime
            )
        },
        summary: "Users wait too long for the first words of an answer",
        description: "p95 of the time to first token (or to the head of a streamed chat answer) is {{ $value | humanizeDuration }}, above the threshold.",
    },
    Alert {
        name: "ClawdBotSlowResponses",
        severity: "warning",
        defaults: d(30.0, "5m", "5m"),
        expr: |s, w, t| {
            format!(
                "histogram_quantile(0.95, sum by (le) (rate(clawdbot_http_request_duration_seconds_bucket{{{r},route=~\"{CHAT_ROUTES}\",stream=\"false\"}}[{w}]))) > {t}",
                r = s.runtime
            )
        },
        summary: "Whole (non-streamed) chat answers take too long",
        description: "p95 of non-streamed chat and OpenAI answers is {{ $value | humanizeDuration }}.",
    },
    Alert {
        name: "ClawdBotHighErrorRate",
        severity: "critical",
        defaults: d(0.05, "5m", "5m"),
        expr: |s, w, t| {
            format!(
                "sum(rate(clawdbot_http_request_duration_seconds_count{{{r},route!~\"/health.*\",status=~\"5..\"}}[{w}]))\n\
                 / sum(rate(clawdbot_http_request_duration_seconds_count{{{r},route!~\"/health.*\"}}[{w}])) > {t}",
                r = s.runtime
            )
        },
        summary: "Many requests fail with a server error",
        description: "{{ $value | humanizePercentage }} of requests answered 5xx.",
    },
    Alert {
        name: "ClawdBotModelUpstreamFailing",
        severity: "critical",
        defaults: d(0.1, "5m", "5m"),
        expr: |s, w, t| {
            format!(
                "(sum(rate(clawdbot_model_request_duration_seconds_count{{{r},outcome!~\"ok|cancelled|rejected\"}}[{w}]))\n\
                 / sum(rate(clawdbot_model_request_duration_seconds_count{{{r}}}[{w}])) > {t})\n\
                 or\n\
                 (max(clawdbot_model_circuit_open{{{r}}}) > 0)",
                r = s.runtime
            )
        },
        summary: "The model provider is failing or its circuit is open",
        description: "{{ $value | humanizePercentage }} of model requests failed upstream (100% while an upstream endpoint's circuit breaker is open).",
    },
    Alert {
        name: "ClawdBotWebhookSignatureFailures",
        severity: "warning",
        defaults: d(0.1, "5m", "5m"),
        expr: |s, w, t| {
            format!(
                "sum by (channel) (rate(clawdbot_webhook_requests_total{{{r},outcome=~\"bad_signature|stale|bad_token|replayed\"}}[{w}])) > {t}",
                r = s.runtime
            )
        },
        summary: "IM webhooks arrive with bad signatures, stale timestamps or wrong tokens",
        description: "{{ $labels.channel }}: {{ $value }} refused webhook requests per second: a wrong secret, a clock off, or someone forging requests.",
    },
    Alert {
        name: "ClawdBotChannelRepliesFailing",
        severity: "warning",
        defaults: d(0.0, "5m", "10m"),
        expr: |s, w, t| {
            format!(
                "sum by (channel) (increase(clawdbot_channel_replies_total{{{r},outcome=\"failed\"}}[{w}])) > {t}",
                r = s.runtime
            )
        },
        summary: "Replies to an IM platform fail after every retry",
        description: "{{ $labels.channel }}: {{ $value }} replies failed in the window; users got no answer.",
    },
    Alert {
        name: "ClawdBotLogBacklog",
        severity: "warning",
        defaults: d(1000.0, "5m", "10m"),
        expr: |s, w, t| {
            format!(
                "(max(clawdbot_log_queue_depth{{{r}}}) > {t})\n\
                 or\n\
                 (sum(increase(clawdbot_log_spilled_total{{{r}}}[{w}])) > 0)",
                r = s.runtime
            )
        },
        summary: "Conversation logs are not reaching the database",
        description: "Exchanges queue up in memory or spill to local files ({{ $value }}): durability is at risk.",
    },
    Alert {
        name: "ClawdBotReplicasUnavailable",
        severity: "warning",
        defaults: d(0.0, "10m", "5m"),
        // kube-state-metrics' series; the window is unused.
        expr: |s, _w, t| {
            format!(
                "kube_deployment_spec_replicas{{{k}}} - kube_deployment_status_replicas_available{{{k}}} > {t}",
                k = s.deployment
            )
        },
        summary: "Fewer bot-runtime replicas are available than wanted",
        description: "{{ $value }} replica(s) missing (needs kube-state-metrics).",
    },
];

/// The names of every alert, for validating `spec.monitoring.alerts` keys.
pub fn alert_names() -> Vec<&'static str> {
    ALERTS.iter().map(|a| a.name).collect()
}

/// The rule group of one bot, with its overrides applied; disabled alerts
/// are left out.
pub fn rule_group(ns: &str, bot: &str, m: &MonitoringSpec) -> PrometheusRuleGroups {
    let sel = Selectors::new(ns, bot);
    let base = m
        .runbook_base_url
        .as_deref()
        .unwrap_or(DEFAULT_RUNBOOK_BASE)
        .trim_end_matches('/');
    let rules = ALERTS
        .iter()
        .filter_map(|a| {
            let o = m.alerts.get(a.name);
            if o.and_then(|o| o.enabled) == Some(false) {
                return None;
            }
            let threshold = o.and_then(|o| o.threshold).unwrap_or(a.defaults.threshold);
            let window = o
                .and_then(|o| o.window.as_deref())
                .unwrap_or(a.defaults.window);
            let for_ = o.and_then(|o| o.for_.as_deref()).unwrap_or(a.defaults.for_);
            Some(PrometheusRuleGroupsRules {
                alert: Some(a.name.into()),
                expr: IntOrString::String((a.expr)(&sel, window, threshold)),
                r#for: Some(for_.into()),
                labels: Some(BTreeMap::from([
                    ("severity".into(), a.severity.into()),
                    ("namespace".into(), ns.into()),
                    ("clawdbot".into(), bot.into()),
                ])),
                annotations: Some(BTreeMap::from([
                    ("summary".into(), format!("{}: {}", bot, a.summary)),
                    ("description".into(), a.description.into()),
                    ("runbook_url".into(), format!("{base}/{}.md", a.name)),
                ])),
                ..PrometheusRuleGroupsRules::default()
            })
        })
        .collect();
    PrometheusRuleGroups {
        name: format!("clawdbot.{ns}.{bot}"),
        rules: Some(rules),
        ..PrometheusRuleGroups::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AlertOverride;

    fn rule<'a>(g: &'a PrometheusRuleGroups, name: &str) -> Option<&'a PrometheusRuleGroupsRules> {
        g.rules
            .iter()
            .flatten()
            .find(|r| r.alert.as_deref() == Some(name))
    }

    fn expr(r: &PrometheusRuleGroupsRules) -> &str {
        match &r.expr {
            IntOrString::String(s) => s,
            IntOrString::Int(_) => panic!("expr is a number"),
        }
    }

    #[test]
    fn every_alert_has_its_defaults_labels_and_runbook() {
        let g = rule_group("prod", "hello", &MonitoringSpec::default());
        assert_eq!(g.name, "clawdbot.prod.hello");
        assert_eq!(g.rules.as_ref().map(Vec::len), Some(ALERTS.len()));
        for a in ALERTS {
            let r = rule(&g, a.name).expect(a.name);
            assert_eq!(r.r#for.as_deref(), Some(a.defaults.for_), "{}", a.name);
            let labels = r.labels.as_ref().expect("labels");
            assert_eq!(labels["clawdbot"], "hello");
            assert_eq!(labels["namespace"], "prod");
            assert!(["warning", "critical"].contains(&labels["severity"].as_str()));
            let notes = r.annotations.as_ref().expect("annotations");
            assert_eq!(
                notes["runbook_url"],
                format!("{DEFAULT_RUNBOOK_BASE}/{}.md", a.name)
            );
            let e = expr(r);
            // Every expression is about this bot only.
            assert!(
                e.contains(r#"namespace="prod",service="hello""#)
                    || e.contains(r#"namespace="prod",deployment="hello""#),
                "{e}"
            );
            assert!(e.contains(&format!("> {}", a.defaults.threshold)), "{e}");
        }
        let lat = expr(rule(&g, "ClawdBotHighLatency").expect("latency"));
        assert!(lat.contains("clawdbot_model_time_to_first_token_seconds_bucket"));
        assert!(
            lat.contains(r#"stream="true""#) && lat.contains("[5m]"),
            "{lat}"
        );
        let slow = expr(rule(&g, "ClawdBotSlowResponses").expect("slow"));
        assert!(slow.contains(r#"stream="false""#), "{slow}");
    }

    #[test]
    fn overrides_change_one_alert_and_can_switch_it_off() {
        let m = MonitoringSpec {
            runbook_base_url: Some("https://wiki.example.com/runbooks/".into()),
            alerts: BTreeMap::from([
                (
                    "ClawdBotHighLatency".to_owned(),
                    AlertOverride {
                        threshold: Some(1.5),
                        for_: Some("30s".into()),
                        window: Some("1m".into()),
                        ..AlertOverride::default()
                    },
                ),
                (
                    "ClawdBotLogBacklog".to_owned(),
                    AlertOverride {
                        enabled: Some(false),
                        ..AlertOverride::default()
                    },
                ),
            ]),
            ..MonitoringSpec::default()
        };
        let g = rule_group("ns", "b", &m);
        let lat = rule(&g, "ClawdBotHighLatency").expect("latency");
        assert_eq!(lat.r#for.as_deref(), Some("30s"));
        let e = expr(lat);
        assert!(
            e.contains("[1m]") && e.contains("> 1.5") && !e.contains("[5m]"),
            "{e}"
        );
        assert_eq!(
            lat.annotations.as_ref().expect("annotations")["runbook_url"],
            "https://wiki.example.com/runbooks/ClawdBotHighLatency.md"
        );
        assert!(rule(&g, "ClawdBotLogBacklog").is_none());
        // The others keep their defaults.
        let errors = rule(&g, "ClawdBotHighErrorRate").expect("errors");
        assert_eq!(errors.r#for.as_deref(), Some("5m"));
        assert!(expr(errors).contains("> 0.05"));
    }
}
