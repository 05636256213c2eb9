//! The rendered alert rules pass Prometheus's own checker (`promtool check
//! rules`, from Debian's prometheus package, which `make test` installs):
//! valid PromQL, durations and templates, with defaults and overrides.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use clawdbot_operator::crd::{AlertOverride, MonitoringSpec};
use clawdbot_operator::render::alerts::{ALERTS, rule_group};
use serde_json::json;

const PROMTOOL: &str = "/usr/bin/promtool";

fn promtool_check(dir: &Path, m: &MonitoringSpec) -> String {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/install-test-tools.sh (make test does)"
    );
    let file = dir.join("rules.json");
    // JSON is YAML: promtool reads the groups exactly as the PrometheusRule carries them.
    let groups = json!({ "groups": [rule_group("prod", "hello", m)] });
    std::fs::write(&file, serde_json::to_vec_pretty(&groups).expect("json")).expect("write");
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
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
