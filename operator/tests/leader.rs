//! Leader election: a replica that cannot take the Lease (another holder,
//! 409 on apply) never starts the controller and makes no other writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clawdbot_operator::leader::{LeaseSettings, run_as_leader};
use clawdbot_operator::metrics::Metrics;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use tokio::sync::watch;

#[tokio::test]
async fn a_replica_that_gets_409_on_the_lease_does_no_work() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            seen.lock().unwrap().push(format!("{method} {path}"));
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let (code, body) = match method.as_str() {
                "GET" => (
                    200,
                    json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": "clawdbot-operator", "namespace": "ops", "resourceVersion": "5"},
                        "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now}
                    }),
                ),
                _ => (
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = Client::new(svc, "default");
    let worked = Arc::new(AtomicBool::new(false));
    let flag = worked.clone();
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let lease = LeaseSettings {
        name: "clawdbot-operator".into(),
        namespace: "ops".into(),
        identity: "me".into(),
        duration_secs: 15,
        grace_secs: 5,
    };
    let runner = tokio::spawn(run_as_leader(
        client,
        lease,
        metrics.clone(),
        stop_rx,
        move |_| {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
            }
        },
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !worked.load(Ordering::SeqCst),
        "the controller must not start without the Lease"
    );
    assert_eq!(metrics.leader.get(), 0);
    let paths = paths.lock().unwrap();
    assert!(!paths.is_empty(), "the Lease was looked at");
    for p in paths.iter() {
        assert!(
            p.contains("/apis/coordination.k8s.io/v1/namespaces/ops/leases"),
            "only Lease requests: {p}"
        );
    }
}

#[tokio::test]
async fn a_replica_that_takes_the_lease_runs_the_work_and_stops_it_on_shutdown() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut stored: Option<serde_json::Value> = None;
        let mut rv = 1;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let (code, body) = match (method.as_str(), &stored) {
                ("GET", None) => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                ("GET", Some(s)) => (200, s.clone()),
                _ => {
                    // Create or apply: keep what was sent as the Lease.
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&bytes).unwrap_or(json!({}));
                    if let Some(prev) = &stored {
                        let mut merged = prev.clone();
                        if let Some(spec) = v.get("spec") {
                            for (k, val) in spec.as_object().unwrap() {
                                merged["spec"][k] = val.clone();
                            }
                        }
                        v = merged;
                    }
                    rv += 1;
                    v["apiVersion"] = json!("coordination.k8s.io/v1");
                    v["kind"] = json!("Lease");
                    v["metadata"]["name"] = json!("clawdbot-operator");
                    v["metadata"]["namespace"] = json!("ops");
                    v["metadata"]["resourceVersion"] = json!(rv.to_string());
                    stored = Some(v.clone());
                    (if method == "POST" { 201 } else { 200 }, v)
                }
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = Client::new(svc, "default");
    let running = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let (r, s) = (running.clone(), stopped.clone());
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let lease = LeaseSettings {
        name: "clawdbot-operator".into(),
        namespace: "ops".into(),
        identity: "me".into(),
        duration_secs: 15,
        grace_secs: 5,
    };
    let m = metrics.clone();
    let runner = tokio::spawn(run_as_leader(
        client,
        lease,
        metrics.clone(),
        stop_rx,
        move |mut stop| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                r.store(true, Ordering::SeqCst);
                let _ = stop.wait_for(|v| *v).await;
                s.store(true, Ordering::SeqCst);
            }
        },
    ));
    let started = tokio::time::Instant::now();
    while !running.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never became leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.leader.get(), 1);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(stopped.load(Ordering::SeqCst), "the work was told to stop");
    assert_eq!(metrics.leader.get(), 0);
}
