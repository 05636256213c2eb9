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
    passes(json!({"model": {"backend": "None"}}));
    passes(json!({"model": {"endpoint": "http://m/v1"}}));
    passes(
        json!({"model": {"backend": "OpenAI", "endpoint": "http://m/v1",
        "apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
    );
    fails(
        json!({"model": {"backend": "OpenAI"}}),
        "model.endpoint is required when model.backend is OpenAI",
        "spec.model.endpoint",
    );
    fails(
        json!({"model": {"apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
        "model.apiKeySecretRef needs model.endpoint",
        "spec.model.apiKeySecretRef",
    );
    fails(
        json!({"model": {"backend": "None", "apiKeySecretRef": {"name": "k", "key": "api-key"}}}),
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
fn local_model_and_knowledge_rules() {
    passes(json!({"model": {"backend": "Local"}}));
    passes(
        json!({"model": {"backend": "Local", "local": {"persistentVolumeClaim": "m", "path": "a.gguf"}}}),
    );
    fails(
        json!({"model": {"backend": "Local", "local": {"persistentVolumeClaim": "m"}}}),
        "model.local.path (the file inside the claim) is required with model.local.persistentVolumeClaim",
        "spec.model.local.path",
    );
    passes(json!({"knowledge": {"name": "faq"}}));
    passes(json!({"knowledge": {"persistentVolumeClaim": "faq"}}));
    for both_or_none in [
        json!({}),
        json!({"name": "a", "persistentVolumeClaim": "b"}),
    ] {
        fails(
            json!({"knowledge": both_or_none}),
            "knowledge needs exactly one of name (a ConfigMap) and persistentVolumeClaim",
            "spec.knowledge",
        );
    }
}

#[test]
fn every_rule_is_exercised() {
    // The rules this file tests, by message; a new rule must get a test.
    let tested = [
        "model.endpoint is required when model.backend is OpenAI",
        "model.apiKeySecretRef needs model.endpoint",
        "set exactly one of redis.managed and redis.external",
        "set exactly one of database.managed, database.cloudNativePG and database.external",
        "spec.redis is required with more than one replica or with autoscaling: in-memory sessions are not shared between pods",
        "an enabled channel needs credentialsSecretRef",
        "autoscaling.minReplicas must not exceed maxReplicas",
        "set disruptionBudget.minAvailable or maxUnavailable, not both",
        "an enabled ingress needs a host",
        "model.local.path (the file inside the claim) is required with model.local.persistentVolumeClaim",
        "knowledge needs exactly one of name (a ConfigMap) and persistentVolumeClaim",
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
fn replicas_defaults_to_one() {
    // Set by the API server on create, with no field manager: an autoscaler
    // writing it through /scale never fights a GitOps tool that leaves it
    // out, and the scale subresource is never empty (an HPA on an unset
    // replicas field stays at ScalingDisabled).
    let schema = schema();
    let r = &schema["properties"]["spec"]["properties"]["replicas"];
    assert_eq!(r["type"], "integer");
    assert_eq!(r["default"], 1, "{r}");
    assert_eq!(
        (r["minimum"].as_f64(), r["maximum"].as_f64()),
        (Some(0.0), Some(1000.0))
    );
}

#[test]
fn status_conditions_are_a_map_keyed_by_type() {
    let schema = schema();
    let c = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(c["x-kubernetes-list-type"], "map", "{c}");
    assert_eq!(c["x-kubernetes-list-map-keys"], json!(["type"]), "{c}");
}

#[test]
fn redis_and_database_are_unions() {
    let url = json!({"urlSecretRef": {"name": "s", "key": "url"}});
    passes(json!({"redis": {"managed": {}}}));
    passes(json!({"redis": {"external": url}}));
    fails(
        json!({"redis": {"managed": {}, "external": url}}),
        "set exactly one of redis.managed and redis.external",
        "spec.redis",
    );
    fails(
        json!({"redis": {}}),
        "set exactly one of redis.managed and redis.external",
        "spec.redis",
    );
    let db = "set exactly one of database.managed, database.cloudNativePG and database.external";
    passes(json!({"database": {"managed": {}}}));
    passes(json!({"database": {"cloudNativePG": {"storage": {"size": "10Gi"}}}}));
    passes(json!({"database": {"external": url}}));
    fails(json!({"database": {}}), db, "spec.database");
    fails(
        json!({"database": {"managed": {}, "cloudNativePG": {"storage": {"size": "1Gi"}}}}),
        db,
        "spec.database",
    );
    fails(
        json!({"database": {"managed": {}, "external": url}}),
        db,
        "spec.database",
    );
}

const SINGLE_POD: &str = "spec.redis is required with more than one replica or with autoscaling: in-memory sessions are not shared between pods";

/// Evaluates the single-pod rule the way the API server does with
/// `optionalOldSelf: true`: `oldSelf` is an optional, none on create.
/// (kube's client-side validator binds it to null instead, which the
/// optional functions the rule needs do not accept.)
fn single_pod_rule(spec: Value, old: Option<Value>) -> bool {
    use cel::objects::OptionalValue;
    let program = cel::Program::compile(clawdbot_operator::crd::SINGLE_POD_RULE).expect("compiles");
    let mut ctx = cel::Context::default();
    ctx.add_variable("self", spec).expect("self");
    let old = match old {
        Some(v) => OptionalValue::of(cel::to_value(v).expect("old")),
        None => OptionalValue::none(),
    };
    ctx.add_variable_from_value("oldSelf", cel::Value::Opaque(std::sync::Arc::new(old)));
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => b,
        other => panic!("the rule did not evaluate to a bool: {other:?}"),
    }
}

#[test]
fn more_than_one_pod_needs_redis_and_the_rule_ratchets() {
    let redis = json!({"managed": {}});
    // Create (no old object).
    for (spec, ok) in [
        (json!({}), true),
        (json!({"replicas": 1}), true),
        (json!({"replicas": 0}), true),
        (json!({"autoscaling": {"maxReplicas": 3}}), true),
        (
            json!({"autoscaling": {"enabled": false, "maxReplicas": 3}}),
            true,
        ),
        (json!({"replicas": 2}), false),
        (
            json!({"autoscaling": {"enabled": true, "maxReplicas": 3}}),
            false,
        ),
        (json!({"replicas": 2, "redis": redis}), true),
        (
            json!({"autoscaling": {"enabled": true, "maxReplicas": 3}, "redis": redis}),
            true,
        ),
    ] {
        assert_eq!(single_pod_rule(spec.clone(), None), ok, "create {spec}");
    }
    // Update of an object that already broke the rule (made before it
    // existed): unrelated edits still go through.
    let old = json!({"replicas": 3});
    assert!(single_pod_rule(
        json!({"replicas": 3, "paused": true}),
        Some(old.clone())
    ));
    // Update of a good object into a bad one: refused.
    assert!(!single_pod_rule(
        json!({"replicas": 3}),
        Some(json!({"replicas": 1}))
    ));
    assert!(!single_pod_rule(
        json!({"replicas": 1, "autoscaling": {"enabled": true, "maxReplicas": 3}}),
        Some(json!({"replicas": 1}))
    ));
    // Dropping Redis from a scaled bot: refused.
    assert!(!single_pod_rule(
        json!({"replicas": 3}),
        Some(json!({"replicas": 3, "redis": redis}))
    ));

    // The schema carries it with optionalOldSelf, at spec, reported on spec.redis.
    let rules = schema()["properties"]["spec"]["x-kubernetes-validations"].clone();
    let rule = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["message"] == SINGLE_POD)
        .expect("the rule is on spec");
    assert_eq!(rule["optionalOldSelf"], true);
    assert_eq!(rule["fieldPath"], ".redis");
    // kube's client-side validator: good objects pass (the rule
    // short-circuits before oldSelf), bad ones are refused at spec.
    passes(json!({"replicas": 1}));
    passes(json!({"replicas": 4, "redis": redis}));
    let errors = check(&object(json!({"replicas": 4})));
    assert_eq!(errors.len(), 1, "{errors:?}");
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
        "spec.redis.external.urlSecretRef",
        "spec.database.external.urlSecretRef",
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
