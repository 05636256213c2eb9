//! The Grafana dashboard (deploy/grafana/clawdbot-dashboard.json) and the
//! operator's alert rules (as rendered in its production golden) query only
//! series that exist: every `clawdbot_*` selector is a metric this runtime
//! registers, the others are kube-state-metrics' or Prometheus's own; and
//! every dashboard query is valid PromQL (`promtool check rules`, from the
//! prometheus package `make test` installs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bot_runtime::telemetry::metrics::Metrics;

const PROMTOOL: &str = "/usr/bin/promtool";

/// Series the runtime does not export but the queries may read.
const EXTERNAL: &[&str] = &[
    // kube-state-metrics (ClawdBotReplicasUnavailable, the Replicas panel).
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    // Prometheus's own per-target series.
    "up",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bot-runtime/ has a parent")
        .to_path_buf()
}

/// Metric names of selectors: an identifier directly followed by `{`
/// (every query here selects by namespace and bot, so each has braces).
fn selectors(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut in_quotes = false;
    for ch in expr.chars() {
        if ch == '"' {
            in_quotes = !in_quotes;
        }
        if in_quotes {
            word.clear();
            continue;
        }
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
            continue;
        }
        if ch == '{' && !word.is_empty() {
            out.insert(word.clone());
        }
        word.clear();
    }
    out
}

/// Names among `exprs` that neither the runtime nor EXTERNAL has.
fn unknown_names<'a>(exprs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let known: BTreeSet<String> = Metrics::new()
        .series_names()
        .into_iter()
        .chain(EXTERNAL.iter().map(|s| s.to_string()))
        .collect();
    exprs
        .into_iter()
        .flat_map(selectors)
        .filter(|n| !known.contains(n))
        .collect()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/clawdbot-dashboard.json"))
        .expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn dashboard_queries() -> Vec<String> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

/// Grafana's variables as Prometheus would see them after substitution.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$namespace", "prod")
        .replace("$bot", "hello")
}

#[test]
fn the_selector_scan_finds_names_and_skips_functions_and_strings() {
    let s = selectors(r#"sum by (le) (rate(a_b{x="y{z"}[5m])) / up{job="j"} > on() c:d{}"#);
    assert_eq!(
        s.into_iter().collect::<Vec<_>>(),
        ["a_b", "c:d", "up"].map(String::from)
    );
    // Not vacuous: a misspelled runtime name is caught.
    assert_eq!(
        unknown_names([r#"rate(clawdbot_http_requests_total{namespace="a"}[5m])"#]),
        ["clawdbot_http_requests_total"]
    );
}

#[test]
fn the_dashboard_names_only_real_series() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    assert_eq!(
        unknown_names(queries.iter().map(String::as_str)),
        Vec::<String>::new()
    );
    // Its variables read a real series too.
    let d = dashboard();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["definition"].as_str())
        .collect();
    assert_eq!(vars.len(), 2);
    for v in vars {
        assert!(
            v.contains("clawdbot_http_request_duration_seconds_count"),
            "{v}"
        );
    }
}

#[test]
fn the_alert_rules_name_only_real_series() {
    // The operator's rendered PrometheusRule, with every alert on.
    let golden = std::fs::read_to_string(repo().join("operator/tests/golden/production.yaml"))
        .expect("read the golden");
    let start = golden
        .find("kind: PrometheusRule")
        .expect("the golden has a PrometheusRule");
    let rules = &golden[start..];
    let names = selectors(rules);
    assert!(
        names.contains("clawdbot_model_time_to_first_token_seconds_bucket")
            && names.contains("clawdbot_log_queue_depth"),
        "{names:?}"
    );
    assert_eq!(unknown_names([rules]), Vec::<String>::new());
}

/// `promtool check rules` on `exprs` as recording rules (it parses and
/// checks each): whether it passed, and what it said.
fn promtool_check(dir: &Path, exprs: &[String]) -> (bool, String) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/install-test-tools.sh (make test does)"
    );
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query{i}"), "expr": q}))
        .collect();
    let file = dir.join("dashboard-rules.json");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let dir = std::env::temp_dir().join(format!("clawdbot-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let queries: Vec<String> = dashboard_queries().iter().map(|q| substituted(q)).collect();
    let (ok, text) = promtool_check(&dir, &queries);
    assert!(ok, "promtool check rules:\n{text}");
    assert!(
        text.contains(&format!("{} rules found", queries.len())),
        "{text}"
    );
    // Not vacuous: promtool refuses a broken query.
    let (ok, _) = promtool_check(&dir, &["sum(rate(a[5m])".to_owned()]);
    assert!(!ok);
    let _ = std::fs::remove_dir_all(&dir);
}
