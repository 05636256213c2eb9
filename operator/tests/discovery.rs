//! Discovery answers: a group version that is not served (404) is absent; a
//! failed answer (500, a dropped connection) is an error to retry, never
//! "absent" (which would silently stop reconciling that kind).

use clawdbot_operator::controller::Apis;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use tower_test::mock;

fn resources(gv: &str, plural: &str) -> serde_json::Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
           "resources": [{"name": plural, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["get"]}]})
}

/// Serves discovery: `broken` answers 500, `missing` 404, the rest their resource.
async fn discover(
    broken: Option<&'static str>,
    missing: &'static [&'static str],
) -> Result<Apis, kube::Error> {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let gv = path.trim_start_matches("/apis/").to_owned();
            let plural = match gv.as_str() {
                "autoscaling/v2" => "horizontalpodautoscalers",
                "policy/v1" => "poddisruptionbudgets",
                "networking.k8s.io/v1" => "networkpolicies",
                "batch/v1" => "cronjobs",
                "storage.k8s.io/v1" => "storageclasses",
                "postgresql.cnpg.io/v1" => "clusters",
                _ => "unknown",
            };
            let (code, body) = if Some(gv.as_str()) == broken {
                (
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500}),
                )
            } else if missing.contains(&gv.as_str()) {
                (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                )
            } else {
                (200, resources(&gv, plural))
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
    Apis::discover(&Client::new(svc, "default")).await
}

#[tokio::test]
async fn served_and_missing_apis() {
    let apis = discover(None, &["postgresql.cnpg.io/v1"]).await.unwrap();
    assert_eq!(apis, Apis::all());
    let apis = discover(None, &["policy/v1", "postgresql.cnpg.io/v1"])
        .await
        .unwrap();
    assert!(!apis.policy_v1 && apis.autoscaling_v2);
    let apis = discover(None, &[]).await.unwrap();
    assert!(apis.cnpg);
}

#[tokio::test]
async fn a_failed_answer_is_an_error_not_an_absent_api() {
    // The old discovery logged and took any error for "absent".
    for gv in [
        "autoscaling/v2",
        "networking.k8s.io/v1",
        "postgresql.cnpg.io/v1",
    ] {
        let err = discover(Some(gv), &[]).await;
        assert!(err.is_err(), "{gv}: {err:?}");
    }
}
