//! Controller scenarios against kube's tower-test mock API: each test lists
//! the exact requests the reconciler must make, in order, and the answers.

use std::sync::Arc;
use std::time::Duration;

mod common;

use clawdbot_operator::controller::{Apis, Context, reconcile};
use common::context_with;
use http::{Request, Response};
use kube::Client;
use kube::api::DynamicObject;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

enum Reply {
    /// Answer with the request body, given a resourceVersion (and uid).
    Echo(u16, &'static str),
    Json(u16, Value),
    NotFound,
    Conflict,
}

struct Expect {
    method: &'static str,
    path: String,
    reply: Reply,
}

fn expect(method: &'static str, path: impl Into<String>, reply: Reply) -> Expect {
    Expect {
        method,
        path: path.into(),
        reply,
    }
}

#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason})
}

/// Answers the scripted requests in order, asserting each, then asserts
/// that nothing else is sent.
async fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<Expect>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (i, step) in script.into_iter().enumerate() {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "step {i}: expected {} {}, got no request",
                    step.method, step.path
                )
            })
            .expect("the client is gone");
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(
            (method.as_str(), path.as_str()),
            (step.method, step.path.as_str()),
            "step {i} (seen so far: {seen:#?})"
        );
        let (code, out) = match step.reply {
            Reply::Echo(code, rv) => {
                let mut o = body.clone();
                o["metadata"]["resourceVersion"] = json!(rv);
                o["metadata"]["uid"] = json!(format!("uid-{i}"));
                (code, o)
            }
            Reply::Json(code, v) => (code, v),
            Reply::NotFound => (404, status(404, "NotFound")),
            Reply::Conflict => (409, status(409, "Conflict")),
        };
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap(),
        );
        seen.push(Seen {
            method,
            path,
            query,
            body,
        });
    }
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
    seen
}

fn context(client: Client) -> Arc<Context> {
    context_with(client, Apis::all(), &[])
}

/// Metadata of a child this bot controls, at resourceVersion "7".
fn owned(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "default",
        "resourceVersion": "7", "labels": {"app.kubernetes.io/managed-by": "clawdbot-operator"},
        "ownerReferences": [{"apiVersion": "clawdbot.io/v1alpha1", "kind": "ClawdBot", "name": "hello",
            "uid": "bot-uid", "controller": true}]}})
}

fn bot(spec: Value, status: Option<Value>) -> Arc<DynamicObject> {
    let mut v = json!({
        "apiVersion": "clawdbot.io/v1alpha1",
        "kind": "ClawdBot",
        "metadata": {"name": "hello", "namespace": "default", "uid": "bot-uid", "generation": 1, "resourceVersion": "10"},
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

const CORE: &str = "/api/v1/namespaces/default";
const APPS: &str = "/apis/apps/v1/namespaces/default";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const BOT: &str = "/apis/clawdbot.io/v1alpha1/namespaces/default/clawdbots/hello";

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default", "resourceVersion": "3"}, "data": {"api-keys": "a2V5OmFkbWlu"}})
}

/// Children of a bot with nothing optional: create everything.
fn first_apply_script() -> Vec<Expect> {
    vec![
        // The Secret cache holds every Secret: hello-api-keys is known to
        // be missing without asking.
        expect("POST", format!("{CORE}/secrets"), Reply::Echo(201, "2")),
        // Its digest (for the config hash) is taken from what was created,
        // and the caches know every child name is free: no GETs.
        expect(
            "PATCH",
            format!("{CORE}/serviceaccounts/hello"),
            Reply::Echo(200, "11"),
        ),
        expect(
            "PATCH",
            format!("{CORE}/configmaps/hello-config"),
            Reply::Echo(200, "12"),
        ),
        expect(
            "PATCH",
            format!("{APPS}/deployments/hello"),
            Reply::Echo(200, "13"),
        ),
        expect(
            "PATCH",
            format!("{CORE}/services/hello"),
            Reply::Echo(200, "14"),
        ),
        // Optional children the spec does not want: the caches know there
        // is nothing of ours to delete, so nothing is asked.
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "15")),
        // One Event for everything created.
        expect("POST", EVENTS, Reply::Echo(201, "1")),
    ]
}

#[tokio::test]
async fn a_new_bot_gets_its_children_applied_then_a_status() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let server = tokio::spawn(serve(handle, first_apply_script()));
    reconcile(bot(json!({}), None), context(client))
        .await
        .unwrap();
    let seen = server.await.unwrap();

    // Server-side apply with our field manager, forced.
    for s in seen
        .iter()
        .filter(|s| s.method == "PATCH" && !s.path.ends_with("/status"))
    {
        assert!(
            s.query.contains("fieldManager=clawdbot-operator") && s.query.contains("force=true"),
            "{s:?}"
        );
        assert_eq!(
            s.body["metadata"]["ownerReferences"][0]["uid"], "bot-uid",
            "{s:?}"
        );
        assert_eq!(s.body["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(
            s.body["apiVersion"].is_string() && s.body["kind"].is_string(),
            "SSA bodies carry apiVersion/kind"
        );
    }
    let created = seen
        .iter()
        .find(|s| s.method == "POST" && s.path.ends_with("/secrets"))
        .unwrap();
    assert!(created.body["data"]["api-keys"].is_string());
    // One Normal Event names everything created (kube's recorder scans its
    // whole cache on each publish, so one per child would not scale).
    let events: Vec<&Value> = seen
        .iter()
        .filter(|s| s.path == EVENTS)
        .map(|s| &s.body)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Created");
    assert_eq!(
        events[0]["note"],
        "Created Secret hello-api-keys, ServiceAccount hello, ConfigMap hello-config, Deployment hello, Service hello"
    );
    let st = &seen
        .iter()
        .rfind(|s| s.path.ends_with("/status"))
        .unwrap()
        .body["status"];
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(
        st["selector"],
        "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=hello,app.kubernetes.io/name=clawdbot"
    );
    assert_eq!(st["endpoint"], "http://hello.default.svc:18789");
    assert_eq!(st["authSecretName"], "hello-api-keys");
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(cond("Ready")["status"], "False");
    assert_eq!(cond("Progressing")["status"], "True");
    assert_eq!(cond("Degraded")["status"], "False");
    assert_eq!(cond("Paused")["status"], "False");
}

#[tokio::test]
async fn a_converged_bot_causes_no_events_and_no_status_write() {
    // First pass to learn the status the operator writes.
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, first_apply_script()));
    reconcile(bot(json!({}), None), context(Client::new(svc, "default")))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let written_status = seen
        .iter()
        .rfind(|s| s.path.ends_with("/status"))
        .unwrap()
        .body["status"]
        .clone();

    // Second pass: every child is in the watch caches, at the version the
    // apply returns: no GET before an apply, no event, no status write.
    let cached = [
        owned("v1", "ServiceAccount", "hello"),
        owned("v1", "ConfigMap", "hello-config"),
        owned("apps/v1", "Deployment", "hello"),
        owned("v1", "Service", "hello"),
        owned("v1", "Secret", "hello-api-keys"),
    ];
    let script = vec![
        // The key Secret's content, for the config hash (a new context has
        // no digest cached yet).
        expect(
            "GET",
            format!("{CORE}/secrets/hello-api-keys"),
            Reply::Json(200, secret("hello-api-keys")),
        ),
        expect(
            "PATCH",
            format!("{CORE}/serviceaccounts/hello"),
            Reply::Echo(200, "7"),
        ),
        expect(
            "PATCH",
            format!("{CORE}/configmaps/hello-config"),
            Reply::Echo(200, "7"),
        ),
        expect(
            "PATCH",
            format!("{APPS}/deployments/hello"),
            Reply::Echo(200, "7"),
        ),
        expect(
            "PATCH",
            format!("{CORE}/services/hello"),
            Reply::Echo(200, "7"),
        ),
    ];
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, script));
    reconcile(
        bot(json!({}), Some(written_status)),
        context_with(Client::new(svc, "default"), Apis::all(), &cached),
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn radio_silence_on_an_invalid_spec_except_event_and_status() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let script = vec![
        expect("POST", EVENTS, Reply::Echo(201, "1")),
        expect("GET", format!("{APPS}/deployments/hello"), Reply::NotFound),
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "11")),
    ];
    let server = tokio::spawn(serve(handle, script));
    reconcile(
        bot(json!({"model": {"backend": "OpenAI"}}), None),
        context(Client::new(svc, "default")),
    )
    .await
    .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[0].body["type"], "Warning");
    assert_eq!(seen[0].body["reason"], "InvalidSpec");
    assert!(
        seen[0].body["note"]
            .as_str()
            .unwrap()
            .contains("spec.model.endpoint")
    );
    let degraded = seen[2].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("spec.model.endpoint")
    );
}

#[tokio::test]
async fn a_spec_with_wrong_types_is_degraded_naming_the_field() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let script = vec![
        expect("POST", EVENTS, Reply::Echo(201, "1")),
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "11")),
    ];
    let server = tokio::spawn(serve(handle, script));
    reconcile(
        bot(json!({"replicas": "three"}), None),
        context(Client::new(svc, "default")),
    )
    .await
    .unwrap();
    let seen = server.await.unwrap();
    assert!(
        seen[0].body["note"]
            .as_str()
            .unwrap()
            .starts_with("spec.replicas"),
        "{:?}",
        seen[0].body
    );
    let conds = seen[1].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(conds.iter().any(|c| c["type"] == "Degraded"
        && c["status"] == "True"
        && c["message"].as_str().unwrap().contains("spec.replicas")));
}

#[tokio::test]
async fn a_paused_bot_gets_no_writes_once_its_status_says_paused() {
    // First the Paused condition is recorded...
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(
        handle,
        vec![
            expect("GET", format!("{APPS}/deployments/hello"), Reply::NotFound),
            expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "11")),
        ],
    ));
    reconcile(
        bot(json!({"paused": true}), None),
        context(Client::new(svc, "default")),
    )
    .await
    .unwrap();
    let seen = server.await.unwrap();
    let status = seen[1].body["status"].clone();
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Paused" && c["status"] == "True")
    );
    // ...then nothing is written at all.
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(
        handle,
        vec![expect(
            "GET",
            format!("{APPS}/deployments/hello"),
            Reply::NotFound,
        )],
    ));
    reconcile(
        bot(json!({"paused": true}), Some(status)),
        context(Client::new(svc, "default")),
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn children_the_spec_no_longer_wants_are_deleted() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let hpa = owned("autoscaling/v2", "HorizontalPodAutoscaler", "hello");
    let mut script: Vec<Expect> = first_apply_script().into_iter().take(5).collect();
    script.extend([
        expect(
            "DELETE",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hello",
            Reply::Json(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
        ),
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "15")),
        expect("POST", EVENTS, Reply::Echo(201, "1")),
        expect("POST", EVENTS, Reply::Echo(201, "1")),
    ]);
    let server = tokio::spawn(serve(handle, script));
    reconcile(
        bot(json!({}), None),
        context_with(Client::new(svc, "default"), Apis::all(), &[hpa]),
    )
    .await
    .unwrap();
    let seen = server.await.unwrap();
    let last = &seen[seen.len() - 1].body;
    assert_eq!(last["reason"], "Deleted");
    assert_eq!(
        last["note"],
        "Deleted HorizontalPodAutoscaler hello (no longer in the spec)"
    );
    assert_eq!(last["related"]["kind"], "HorizontalPodAutoscaler");
}

#[tokio::test]
async fn an_unowned_object_with_a_childs_name_is_left_alone_and_named() {
    // Someone made a Service "hello" before the bot: the cache (every
    // Service, metadata only) shows no controller reference to this bot,
    // so the operator does not apply over it.
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let theirs = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello", "namespace": "default", "resourceVersion": "3", "uid": "someone-else"}});
    let mut script: Vec<Expect> = first_apply_script().into_iter().take(4).collect();
    script.extend([
        expect("POST", EVENTS, Reply::Echo(201, "1")),
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "15")),
        expect("POST", EVENTS, Reply::Echo(201, "1")),
    ]);
    let server = tokio::spawn(serve(handle, script));
    reconcile(
        bot(json!({}), None),
        context_with(Client::new(svc, "default"), Apis::all(), &[theirs]),
    )
    .await
    .unwrap();
    let seen = server.await.unwrap();
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "PATCH" && s.path.ends_with("/services/hello")),
        "never written"
    );
    let event = &seen[seen.len() - 3].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "NameConflict");
    assert!(event["note"].as_str().unwrap().contains("Service hello"));
    let conds = seen[seen.len() - 2].body["status"]["conditions"].clone();
    let degraded = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "NameConflict");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("Service hello")
    );
}

#[tokio::test]
async fn an_apply_failure_is_an_error_with_a_degraded_status() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut script: Vec<Expect> = first_apply_script().into_iter().take(1).collect();
    script.extend([
        expect(
            "PATCH",
            format!("{CORE}/serviceaccounts/hello"),
            Reply::Conflict,
        ),
        expect("POST", EVENTS, Reply::Echo(201, "1")),
        expect("PATCH", format!("{BOT}/status"), Reply::Echo(200, "15")),
        // What was done before the failure is still said.
        expect("POST", EVENTS, Reply::Echo(201, "1")),
    ]);
    let server = tokio::spawn(serve(handle, script));
    let result = reconcile(bot(json!({}), None), context(Client::new(svc, "default"))).await;
    assert!(result.is_err());
    let seen = server.await.unwrap();
    assert_eq!(seen[2].body["reason"], "ApplyFailed");
    assert_eq!(seen[4].body["note"], "Created Secret hello-api-keys");
    let conds = seen[3].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Degraded" && c["reason"] == "ApplyFailed")
    );
}
