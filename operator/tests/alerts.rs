//! The rendered alert rules pass Prometheus's own checker (`promtool check
//! rules`, from Debian's prometheus package, which `make test` installs):
//! valid PromQL, durations and templates, with defaults and overrides; and
//! its unit tests (`promtool test rules`, tests/alerts/*.test.yaml): alerts
//! fire on bad series and stay silent under their threshold.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use clawdbot_operator::crd::{AlertOverride, MonitoringSpec};
use clawdbot_operator::render::alerts::{ALERTS, rule_group};
use serde_json::json;

const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs promtool in `dir`: whether it succeeded, and what it printed.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/install-test-tools.sh (make test does)"
    );
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn promtool_check(dir: &Path, m: &MonitoringSpec) -> String {
    // JSON is YAML: promtool reads the groups exactly as the PrometheusRule carries them.
    let groups = json!({ "groups": [rule_group("prod", "hello", m)] });
    std::fs::write(
        dir.join("rules.json"),
        serde_json::to_vec_pretty(&groups).expect("json"),
    )
    .expect("write");
    let (ok, text) = promtool(dir, &["check", "rules", "rules.json"]);
    assert!(ok, "promtool check rules failed:\n{text}");
    text
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "clawdbot-alerts-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn default_rules_pass_promtool() {
    let dir = temp_dir();
    let out = promtool_check(&dir, &MonitoringSpec::default());
    assert!(
        out.contains(&format!("{} rules found", ALERTS.len())),
        "{out}"
    );
}

#[test]
fn overridden_rules_pass_promtool() {
    let dir = temp_dir();
    let m = MonitoringSpec {
        alerts: BTreeMap::from([
            (
                "ClawdBotHighLatency".to_owned(),
                AlertOverride {
                    threshold: Some(0.25),
                    for_: Some("30s".into()),
                    window: Some("1m30s".into()),
                    ..AlertOverride::default()
                },
            ),
            (
                "ClawdBotReplicasUnavailable".to_owned(),
                AlertOverride {
                    enabled: Some(false),
                    ..AlertOverride::default()
                },
            ),
        ]),
        ..MonitoringSpec::default()
    };
    let out = promtool_check(&dir, &m);
    assert!(
        out.contains(&format!("{} rules found", ALERTS.len() - 1)),
        "{out}"
    );
}

fn promtool_test(dir: &Path, test_file: &str) -> (bool, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/alerts")
        .join(test_file);
    std::fs::copy(&src, dir.join(test_file)).expect("copy the unit tests");
    promtool(dir, &["test", "rules", test_file])
}

#[test]
fn runtime_alerts_fire_on_bad_series_and_stay_silent_under_the_threshold() {
    let dir = temp_dir();
    promtool_check(&dir, &MonitoringSpec::default());
    let (ok, out) = promtool_test(&dir, "runtime.test.yaml");
    assert!(ok, "promtool test rules failed:\n{out}");
}

/// The unit tests against rules with these thresholds: they must fail,
/// naming each of these alerts.
fn unit_tests_fail_with(thresholds: &[(&str, f64)]) {
    let dir = temp_dir();
    let m = MonitoringSpec {
        alerts: thresholds
            .iter()
            .map(|(name, t)| {
                let o = AlertOverride {
                    threshold: Some(*t),
                    ..AlertOverride::default()
                };
                (name.to_string(), o)
            })
            .collect(),
        ..MonitoringSpec::default()
    };
    promtool_check(&dir, &m);
    let (ok, out) = promtool_test(&dir, "runtime.test.yaml");
    assert!(!ok, "{out}");
    for (name, _) in thresholds {
        assert!(out.contains(&format!("alertname: {name}")), "{name}: {out}");
    }
}

#[test]
fn the_unit_tests_fail_against_higher_thresholds() {
    // Not vacuous: with every threshold far above its default, each
    // alert's firing cases fail.
    let raised: Vec<(&str, f64)> = ALERTS
        .iter()
        .map(|a| (a.name, a.defaults.threshold * 10.0 + 100.0))
        .collect();
    unit_tests_fail_with(&raised);
}

#[test]
fn the_unit_tests_fail_against_lower_thresholds() {
    // And the silent cases sit just under the defaults: a threshold a
    // little lower makes them fire.
    unit_tests_fail_with(&[
        ("ClawdBotHighLatency", 0.45),
        ("ClawdBotSlowResponses", 28.0),
        ("ClawdBotHighErrorRate", 0.03),
        ("ClawdBotModelUpstreamFailing", 0.08),
        ("ClawdBotWebhookSignatureFailures", 0.05),
        ("ClawdBotLogBacklog", 980.0),
    ]);
}
