//! `spec.monitoring` through a reconcile: without the Prometheus Operator
//! the bot is not held back and says why once; with it, the ServiceMonitor
//! and PrometheusRule appear, carry the user's labels, follow the spec and
//! go when monitoring is switched off.

mod common;

use clawdbot_operator::controller::Apis;
use common::fake_api::{BOT, CORE, Run, condition};
use serde_json::{Value, json};

const MON: &str = "/apis/monitoring.coreos.com/v1/namespaces/default";

fn with_monitoring() -> Apis {
    Apis {
        monitoring_v1: true,
        ..Apis::all()
    }
}

fn spec(enabled: bool) -> Value {
    json!({"monitoring": {
        "enabled": enabled,
        "labels": {"release": "prometheus"},
        "scrapeInterval": "15s",
        "grafanaDashboard": enabled,
        "alerts": {"ClawdBotLogBacklog": {"enabled": false}},
    }})
}

fn has_condition(status: &Value, t: &str) -> bool {
    status["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == t))
}

#[tokio::test]
async fn without_the_prometheus_operator_the_bot_is_not_held_back() {
    let run = Run::new();
    let status = run.reconcile(spec(true), Apis::all(), &[]).await;
    let m = condition(&status, "MonitoringReady");
    assert_eq!(m["status"], "False");
    assert_eq!(m["reason"], "PrometheusOperatorMissing");
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("monitoring.coreos.com/v1")
    );
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_ne!(condition(&status, "Ready")["reason"], "Degraded");
    // The rest of the bot was applied; nothing of the monitoring API asked.
    assert!(run.wrote(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/hello"
    ));
    assert!(
        !run.fake
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|(_, p)| p.starts_with("/apis/monitoring.coreos.com"))
    );
    let missing = |run: &Run| {
        run.warnings()
            .iter()
            .filter(|(r, _)| r == "PrometheusOperatorMissing")
            .count()
    };
    assert_eq!(missing(&run), 1);
    // The dashboard needs no Prometheus Operator.
    let dashboard = run.get(&format!("{CORE}/configmaps/hello-dashboard"));
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["clawdbot-default-hello.json"]
        .as_str()
        .expect("the dashboard JSON");
    let d: Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(d["title"], "ClawdBot default/hello");
    // The same again: no second Event.
    run.reconcile(spec(true), Apis::all(), &[]).await;
    assert_eq!(missing(&run), 1);

    // The CRDs are installed (rediscovery rebuilds the watches and
    // reconciles again): the objects appear.
    let cached = run.ours();
    let status = run.reconcile(spec(true), with_monitoring(), &cached).await;
    let m = condition(&status, "MonitoringReady");
    assert_eq!(
        (m["status"].as_str(), m["reason"].as_str()),
        (Some("True"), Some("Applied"))
    );

    let sm = run.get(&format!("{MON}/servicemonitors/hello"));
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        sm["metadata"]["labels"]["app.kubernetes.io/instance"],
        "hello"
    );
    assert_eq!(sm["metadata"]["ownerReferences"][0]["uid"], "bot-uid");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "runtime"
    );
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(
        (
            ep["port"].as_str(),
            ep["path"].as_str(),
            ep["interval"].as_str()
        ),
        (Some("metrics"), Some("/metrics"), Some("15s"))
    );
    let rule = run.get(&format!("{MON}/prometheusrules/hello"));
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert!(alerts.contains(&"ClawdBotHighLatency"), "{alerts:?}");
    assert!(!alerts.contains(&"ClawdBotLogBacklog"), "switched off");

    // Switched off: both deleted, the condition gone.
    let cached = run.ours();
    let status = run.reconcile(spec(false), with_monitoring(), &cached).await;
    assert!(run.get(&format!("{MON}/servicemonitors/hello")).is_null());
    assert!(run.get(&format!("{MON}/prometheusrules/hello")).is_null());
    assert!(
        run.get(&format!("{CORE}/configmaps/hello-dashboard"))
            .is_null()
    );
    assert!(!has_condition(&status, "MonitoringReady"), "{status}");
}

#[tokio::test]
async fn a_service_monitor_someone_else_made_is_left_alone() {
    let run = Run::new();
    let theirs = json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "hello", "namespace": "default", "uid": "theirs", "resourceVersion": "1"},
        "spec": {"selector": {}, "endpoints": [{"port": "web"}]},
    });
    run.seed(&format!("{MON}/servicemonitors/hello"), theirs.clone());
    let status = run.reconcile(spec(true), with_monitoring(), &[]).await;
    let m = condition(&status, "MonitoringReady");
    assert_eq!(
        (m["status"].as_str(), m["reason"].as_str()),
        (Some("False"), Some("NameConflict"))
    );
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "NameConflict");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("ServiceMonitor hello")
    );
    assert_eq!(run.get(&format!("{MON}/servicemonitors/hello")), theirs);
    // The rule has no such clash and is applied.
    assert!(!run.get(&format!("{MON}/prometheusrules/hello")).is_null());
    assert!(!run.get(BOT).is_null());
}
