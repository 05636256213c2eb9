//! Shared by the operator's integration tests: where the example and fixture
//! manifests live, and how a ClawdBot is read out of a multi-document file.
#![allow(dead_code)]

pub mod fake_api;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use clawdbot_operator::controller::{Apis, Context, Meta, child_kinds};
use clawdbot_operator::crd::{ClawdBot, ClawdBotSpec, SecretKeyRef, SecretRef};
use clawdbot_operator::metrics::Metrics;
use clawdbot_operator::validate;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every YAML document of a file, as JSON values (empty documents skipped).
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

pub fn is_clawdbot(doc: &Value) -> bool {
    doc["apiVersion"] == "clawdbot.io/v1alpha1" && doc["kind"] == "ClawdBot"
}

/// The one ClawdBot document of a file, if it has one.
pub fn clawdbot_document(path: &Path) -> Option<Value> {
    let mut found: Vec<Value> = documents(path).into_iter().filter(is_clawdbot).collect();
    assert!(
        found.len() <= 1,
        "{}: more than one ClawdBot document",
        path.display()
    );
    found.pop()
}

/// Documents of a file other than ClawdBots (the Secrets next to them).
pub fn other_documents(path: &Path) -> Vec<Value> {
    documents(path)
        .into_iter()
        .filter(|d| !is_clawdbot(d))
        .collect()
}

/// Reads a ClawdBot the way the controller does (`validate::parse` of the raw
/// object), in namespace `default` when the manifest names none (as `render` does).
pub fn parse_clawdbot(doc: &Value) -> ClawdBot {
    let raw: DynamicObject = serde_json::from_value(doc.clone()).expect("a Kubernetes object");
    let mut cb = validate::parse(&raw).unwrap_or_else(|e| panic!("not a ClawdBot: {e}"));
    if cb.metadata.namespace.is_none() {
        cb.metadata.namespace = Some("default".into());
    }
    cb
}

pub fn load_clawdbot(path: &Path) -> ClawdBot {
    let doc = clawdbot_document(path)
        .unwrap_or_else(|| panic!("{}: no ClawdBot document", path.display()));
    parse_clawdbot(&doc)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// examples/*.yaml files holding a ClawdBot (config.example.yaml is a runtime
/// config file, not a manifest).
pub fn example_files() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = yaml_files(&examples_dir())
        .into_iter()
        .filter(|p| clawdbot_document(p).is_some())
        .collect();
    assert!(
        files.len() >= 4,
        "expected the ClawdBot examples, found {files:?}"
    );
    files
}

pub fn fixture_files() -> Vec<PathBuf> {
    yaml_files(&fixtures_dir())
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// (name, file) of every golden case: the examples, then the fixtures.
pub fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = example_files()
        .into_iter()
        .chain(fixture_files())
        .map(|p| (stem(&p), p))
        .collect();
    let mut names: Vec<&String> = cases.iter().map(|(n, _)| n).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "an example and a fixture share a name");
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// A controller context on `client` whose watch caches hold `cached`
/// (metadata of objects), as after a running controller's first lists.
pub fn context_with(client: Client, apis: Apis, cached: &[Value]) -> Arc<Context> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "clawdbot-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context::new(
        client,
        recorder,
        Arc::new(Metrics::new()),
        apis,
        "clawdbot/bot-runtime:test".into(),
    );
    let metas: Vec<Meta> = cached
        .iter()
        .map(|v| serde_json::from_value(v.clone()).expect("object metadata"))
        .collect();
    let mut kinds = child_kinds(apis);
    kinds.push(ApiResource::erase::<Secret>(&()));
    ctx.seed_caches(&kinds, &metas);
    Arc::new(ctx)
}

/// A ClawdBot "bot" in namespace default with this spec.
pub fn bot(spec: ClawdBotSpec) -> ClawdBot {
    let mut cb = ClawdBot::new("bot", spec);
    cb.metadata.namespace = Some("default".into());
    cb
}

/// A default spec changed by `f`.
pub fn with(f: impl FnOnce(&mut ClawdBotSpec)) -> ClawdBotSpec {
    let mut s = ClawdBotSpec::default();
    f(&mut s);
    s
}

pub fn key(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

pub fn secret(name: &str) -> Option<SecretRef> {
    Some(SecretRef { name: name.into() })
}
