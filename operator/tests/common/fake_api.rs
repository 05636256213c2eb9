//! A small stateful fake of the API server (tower-test) for reconciles:
//! objects are kept by path, so a test seeds what exists, reconciles, and
//! reads what the operator wrote and asked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use clawdbot_operator::controller::{Apis, reconcile};
use http::{Request, Response};
use kube::Client;
use kube::api::DynamicObject;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

pub const CORE: &str = "/api/v1/namespaces/default";
pub const APPS: &str = "/apis/apps/v1/namespaces/default";
pub const BOT: &str = "/apis/clawdbot.io/v1alpha1/namespaces/default/clawdbots/hello";

#[derive(Default)]
pub struct Fake {
    pub objects: BTreeMap<String, Value>,
    pub log: Vec<(String, String)>,
    pub events: Vec<Value>,
    pub rv: u64,
}

pub type Shared = Arc<Mutex<Fake>>;

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

/// Answers like an API server that stores objects by path: GET, POST to a
/// collection, PATCH (apply or merge: the body replaces), DELETE.
pub async fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, fake: Shared) {
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, out) = {
            let mut f = fake.lock().unwrap();
            f.log.push((method.clone(), path.clone()));
            f.rv += 1;
            let rv = f.rv.to_string();
            match method.as_str() {
                "GET" => match f.objects.get(&path) {
                    Some(o) => (200, o.clone()),
                    None => not_found(),
                },
                "POST" if path.ends_with("/events") => {
                    f.events.push(body.clone());
                    (201, body)
                }
                "POST" => {
                    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                    let key = format!("{path}/{name}");
                    match f.objects.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => (
                            409,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409}),
                        ),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            let mut o = body;
                            o["metadata"]["resourceVersion"] = json!(rv);
                            o["metadata"]["uid"] = json!(format!("uid-{name}"));
                            slot.insert(o.clone());
                            (201, o)
                        }
                    }
                }
                "PATCH" => {
                    let key = path.trim_end_matches("/status").to_owned();
                    let mut o = if path.ends_with("/status") {
                        let mut o = f.objects.get(&key).cloned().unwrap_or(json!({}));
                        o["status"] = body["status"].clone();
                        o
                    } else {
                        body
                    };
                    o["metadata"]["resourceVersion"] = json!(rv);
                    f.objects.insert(key, o.clone());
                    (200, o)
                }
                "DELETE" => match f.objects.remove(&path) {
                    Some(_) => (
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    ),
                    None => not_found(),
                },
                _ => (405, json!({})),
            }
        };
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap(),
        );
    }
}

pub struct Run {
    pub fake: Shared,
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

impl Run {
    pub fn new() -> Self {
        Run {
            fake: Arc::new(Mutex::new(Fake::default())),
        }
    }

    pub fn seed(&self, path: &str, obj: Value) -> &Self {
        self.fake
            .lock()
            .unwrap()
            .objects
            .insert(path.to_owned(), obj);
        self
    }

    /// One reconcile of `spec` with the watch caches holding `cached`.
    pub async fn reconcile(&self, spec: Value, apis: Apis, cached: &[Value]) -> Value {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle, self.fake.clone()));
        // The caches as a running controller's would be: every object of
        // the watched kinds.
        let mut seen: Vec<Value> = cached.to_vec();
        seen.extend(
            self.fake
                .lock()
                .unwrap()
                .objects
                .values()
                .filter(|o| o["kind"].is_string())
                .cloned(),
        );
        let ctx = super::context_with(Client::new(svc, "default"), apis, &seen);
        let status = self
            .fake
            .lock()
            .unwrap()
            .objects
            .get(BOT)
            .and_then(|b| b.get("status").cloned());
        let mut obj = json!({
            "apiVersion": "clawdbot.io/v1alpha1", "kind": "ClawdBot",
            "metadata": {"name": "hello", "namespace": "default", "uid": "bot-uid", "generation": 1, "resourceVersion": "10"},
            "spec": spec,
        });
        if let Some(s) = status {
            obj["status"] = s;
        }
        let bot: DynamicObject = serde_json::from_value(obj).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(bot), ctx))
            .await
            .expect("reconcile finishes");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client is dropped")
            .unwrap();
        self.get(BOT)["status"].clone()
    }

    pub fn get(&self, path: &str) -> Value {
        self.fake
            .lock()
            .unwrap()
            .objects
            .get(path)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn wrote(&self, method: &str, path: &str) -> bool {
        self.fake
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|(m, p)| m == method && p == path)
    }

    /// How many Warning events gave `reason`.
    pub fn warned(&self, reason: &str) -> usize {
        self.warnings().iter().filter(|(r, _)| r == reason).count()
    }

    pub fn warnings(&self) -> Vec<(String, String)> {
        self.fake
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e["type"] == "Warning")
            .map(|e| {
                (
                    e["reason"].as_str().unwrap().to_owned(),
                    e["note"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// What the watch caches would hold of the operator's objects now.
    pub fn ours(&self) -> Vec<Value> {
        self.fake
            .lock()
            .unwrap()
            .objects
            .values()
            .filter(|o| {
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "clawdbot-operator"
            })
            .cloned()
            .collect()
    }

    pub fn clear_log(&self) {
        self.fake.lock().unwrap().log.clear();
    }
}

pub fn secret_value(s: &Value, key: &str) -> String {
    let b = s["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {s}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
}

pub fn condition(status: &Value, t: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
        .unwrap_or_else(|| panic!("no {t} in {status}"))
}
