//! The generated CRD: its CEL rules evaluated client-side (kube's cel
//! Validator) against valid and invalid ClawdBots, the committed CRD file
//! against `clawdbot-operator crd`, and the schema's shape.

mod common;

use std::process::Command;

use clawdbot_operator::crd::ClawdBot;
use kube::CustomResourceExt;
use kube::core::cel::{ErrorKind, ValidationError, Validator};
use serde_json::{Value, json};

fn crd_json() -> Value {
    serde_json::to_value(ClawdBot::crd()).expect("CRD serializes")
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "clawdbot.io/v1alpha1",
        "kind": "ClawdBot",
        "metadata": {"name": "bot", "namespace": "default"},
        "spec": spec,
    })
}

fn check(obj: &Value) -> Vec<ValidationError> {
    match Validator::new().validate(&schema(), obj, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec(),
    }
}

#[track_caller]
fn passes(spec: Value) {
    let errors = check(&object(spec.clone()));
    assert!(errors.is_empty(), "{spec}: {errors:?}");
}

/// Exactly one rule fails: the one with this message, reported at this path.
#[track_caller]
fn fails(spec: Value, message: &str, path: &str) {
    let errors = check(&object(spec.clone()));
    assert_eq!(errors.len(), 1, "{spec}: {errors:?}");
    let e = &errors[0];
    assert_eq!(e.kind, ErrorKind::ValidationFailure, "{spec}: {e:?}");
    assert_eq!(e.message, message, "{spec}");
    assert_eq!(e.field_path, path, "{spec}");
}

#[test]
fn model_rules() {
    passes(json!({}));
    passes(json!({"model": {"backend": "none"}}));
    passes(json!({"model": {"endpoint": "http://m/v1"}}));
    passes(
        json!({"model": {"backend": "openai", "endpoint": "http://m/v1",
        "apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
    );
    fails(
        json!({"model": {"backend": "openai"}}),
        "model.endpoint is required when model.backend is openai",
        "spec.model.endpoint",
    );
    fails(
        json!({"model": {"apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
        "model.apiKeySecretRef needs model.endpoint",
        "spec.model.apiKeySecretRef",
    );
    fails(
        json!({"model": {"backend": "none", "apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
        "model.apiKeySecretRef needs model.endpoint",
        "spec.model.apiKeySecretRef",
    );
}

#[test]
fn channel_rules() {
    for ch in ["dingtalk", "feishu", "wecom", "slack"] {
        passes(json!({"channels": {ch: {}}}));
        passes(json!({"channels": {ch: {"enabled": false}}}));
        passes(json!({"channels": {ch: {"enabled": true, "credentialsSecretRef": {"name": "c"}}}}));
        fails(
            json!({"channels": {ch: {"enabled": true}}}),
            "an enabled channel needs credentialsSecretRef",
            &format!("spec.channels.{ch}.credentialsSecretRef"),
        );
    }
    // Two bad channels, two errors.
    let errors = check(&object(
        json!({"channels": {"dingtalk": {"enabled": true}, "slack": {"enabled": true}}}),
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn autoscaling_rule() {
    passes(json!({"autoscaling": {"maxReplicas": 3}}));
    passes(json!({"autoscaling": {"minReplicas": 3, "maxReplicas": 3}}));
    fails(
        json!({"autoscaling": {"minReplicas": 4, "maxReplicas": 3}}),
        "autoscaling.minReplicas must not exceed maxReplicas",
        "spec.autoscaling.minReplicas",
    );
}

#[test]
fn disruption_budget_rule() {
    passes(json!({"disruptionBudget": {}}));
    passes(json!({"disruptionBudget": {"minAvailable": 1}}));
    passes(json!({"disruptionBudget": {"maxUnavailable": 0}}));
    fails(
        json!({"disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}),
        "set disruptionBudget.minAvailable or maxUnavailable, not both",
        "spec.disruptionBudget",
    );
}

#[test]
fn ingress_rule() {
    passes(json!({"ingress": {}}));
    passes(json!({"ingress": {"enabled": false}}));
    passes(json!({"ingress": {"enabled": true, "host": "bot.example.com"}}));
    fails(
        json!({"ingress": {"enabled": true}}),
        "an enabled ingress needs a host",
        "spec.ingress.host",
    );
}

#[test]
fn every_rule_is_exercised() {
    // The rules this file tests, by message; a new rule must get a test.
    let tested = [
        "model.endpoint is required when model.backend is openai",
        "model.apiKeySecretRef needs model.endpoint",
        "an enabled channel needs credentialsSecretRef",
        "autoscaling.minReplicas must not exceed maxReplicas",
        "set disruptionBudget.minAvailable or maxUnavailable, not both",
        "an enabled ingress needs a host",
    ];
    let mut found = Vec::new();
    collect_rules(&schema(), "", &mut found);
    for (path, message) in &found {
        assert!(
            tested.contains(&message.as_str()),
            "untested CEL rule at {path}: {message}"
        );
    }
    // The four channels share one rule.
    assert_eq!(found.len(), tested.len() + 3, "{found:?}");
}

fn collect_rules(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for r in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((
            path.to_owned(),
            r["message"].as_str().unwrap_or("").to_owned(),
        ));
    }
    for (k, v) in node["properties"].as_object().into_iter().flatten() {
        collect_rules(v, &format!("{path}.{k}"), out);
    }
    if let Some(items) = node.get("items") {
        collect_rules(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        collect_rules(ap, &format!("{path}.*"), out);
    }
}

#[test]
fn examples_and_fixtures_pass_the_rules() {
    for (name, path) in common::cases() {
        let doc = common::clawdbot_document(&path).expect("a ClawdBot");
        let errors = check(&doc);
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

// --- the committed CRD --------------------------------------------------------

#[test]
fn committed_crd_matches_the_binary() {
    let file = common::repo_root().join("crds/clawdbot.io_clawdbots.yaml");
    let committed = std::fs::read_to_string(&file).expect("crds/clawdbot.io_clawdbots.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_clawdbot-operator"))
        .arg("crd")
        .output()
        .expect("run clawdbot-operator crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        committed == printed,
        "{} is stale: regenerate it with\n  cargo run -q -p clawdbot-operator -- crd > crds/clawdbot.io_clawdbots.yaml",
        file.display()
    );
    let parsed: Value = serde_saphyr::from_str(&committed).expect("YAML");
    assert_eq!(parsed, crd_json(), "the file is the CRD");
}

#[test]
fn crd_names_subresources_and_columns() {
    let crd = crd_json();
    let spec = &crd["spec"];
    assert_eq!(crd["metadata"]["name"], "clawdbots.clawdbot.io");
    assert_eq!(spec["group"], "clawdbot.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "ClawdBot");
    assert_eq!(spec["names"]["plural"], "clawdbots");
    assert_eq!(spec["names"]["shortNames"], json!(["cb"]));
    assert_eq!(spec["names"]["categories"], json!(["clawdbot"]));
    let versions = spec["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(
        (
            v["name"].as_str(),
            v["served"].as_bool(),
            v["storage"].as_bool()
        ),
        (Some("v1alpha1"), Some(true), Some(true))
    );
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(
        v["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
    let columns: Vec<(&str, &str, &str)> = v["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or_default(),
                c["jsonPath"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            (
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            ("Replicas", "integer", ".status.readyReplicas"),
            ("Model", "string", ".spec.model.name"),
            ("Endpoint", "string", ".status.endpoint"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
    // Every printer column and scale path points at a field that exists.
    let schema = schema();
    for p in [
        "spec.replicas",
        "status.replicas",
        "status.selector",
        "status.readyReplicas",
        "status.endpoint",
        "spec.model.name",
    ] {
        let mut node = &schema;
        for seg in p.split('.') {
            node = &node["properties"][seg];
        }
        assert!(node.is_object(), "{p} is not in the schema");
    }
}

#[test]
fn replicas_has_no_schema_default() {
    // A default would make the API server write spec.replicas on every
    // object, fighting an autoscaler that owns it through the scale subresource.
    let schema = schema();
    let r = &schema["properties"]["spec"]["properties"]["replicas"];
    assert_eq!(r["type"], "integer");
    assert!(r.get("default").is_none(), "{r}");
    assert_eq!(
        (r["minimum"].as_f64(), r["maximum"].as_f64()),
        (Some(0.0), Some(1000.0))
    );
    assert!(
        !schema["properties"]["spec"]["required"]
            .as_array()
            .is_some_and(|req| req.iter().any(|x| x == "replicas"))
    );
}

fn secret_looking(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "apikey",
        "api_key",
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "privatekey",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A reference to a Secret, not a value: an object whose properties are only
/// `name` (and `key`), or a list of them.
fn is_reference(node: &Value) -> bool {
    let obj = if node["type"] == "array" {
        &node["items"]
    } else {
        node
    };
    obj["type"] == "object"
        && obj["properties"]
            .as_object()
            .is_some_and(|p| !p.is_empty() && p.keys().all(|k| k == "name" || k == "key"))
}

fn walk(node: &Value, path: &str, offenders: &mut Vec<String>) {
    for (k, v) in node["properties"].as_object().into_iter().flatten() {
        let here = format!("{path}.{k}");
        if secret_looking(k) {
            let ok = if k.ends_with("SecretRef") || k == "imagePullSecrets" {
                is_reference(v)
            } else if k.ends_with("SecretName") {
                v["type"] == "string"
            } else {
                // A count such as maxTokens is not a secret value.
                ["integer", "number", "boolean"].contains(&v["type"].as_str().unwrap_or(""))
            };
            if !ok {
                offenders.push(here.clone());
            }
        }
        walk(v, &here, offenders);
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), offenders);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(ap, &format!("{path}.*"), offenders);
    }
}

#[test]
fn no_secret_values_in_the_spec() {
    let schema = schema();
    let mut offenders = Vec::new();
    walk(&schema["properties"]["spec"], "spec", &mut offenders);
    assert!(
        offenders.is_empty(),
        "fields that look like secret values: {offenders:?}"
    );
    // The walk does see the references (it is not vacuous).
    let mut refs = Vec::new();
    collect_names(&schema["properties"]["spec"], "spec", &mut refs);
    for want in [
        "spec.model.apiKeySecretRef",
        "spec.model.fallbacks[].apiKeySecretRef",
        "spec.auth.apiKeysSecretRef",
        "spec.channels.dingtalk.credentialsSecretRef",
        "spec.channels.slack.credentialsSecretRef",
        "spec.redis.urlSecretRef",
        "spec.database.urlSecretRef",
        "spec.ingress.tlsSecretName",
        "spec.imagePullSecrets",
    ] {
        assert!(
            refs.contains(&want.to_owned()),
            "{want} not found in {refs:?}"
        );
    }
    // And it would catch a plain one.
    let mut bad = json!({"properties": {"model": {"properties": {"apiKey": {"type": "string"}}}}});
    let mut found = Vec::new();
    walk(&bad, "spec", &mut found);
    assert_eq!(found, ["spec.model.apiKey"]);
    bad["properties"]["model"]["properties"] = json!({"tokenSecretRef": {"type": "string"}});
    found.clear();
    walk(&bad, "spec", &mut found);
    assert_eq!(
        found,
        ["spec.model.tokenSecretRef"],
        "a *SecretRef that is a plain string"
    );
}

fn collect_names(node: &Value, path: &str, out: &mut Vec<String>) {
    for (k, v) in node["properties"].as_object().into_iter().flatten() {
        let here = format!("{path}.{k}");
        if secret_looking(k) {
            out.push(here.clone());
        }
        collect_names(v, &here, out);
    }
    if let Some(items) = node.get("items") {
        collect_names(items, &format!("{path}[]"), out);
    }
}
