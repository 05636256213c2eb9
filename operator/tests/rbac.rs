//! The install manifest's RBAC against what the controller does: every
//! child kind it watches and writes is granted, `clawdbots/finalizers`
//! (needed for blockOwnerDeletion under OwnerReferencesPermissionEnforcement)
//! is granted, and the aggregated roles let namespace users manage ClawdBots.

mod common;

use clawdbot_operator::controller::{Apis, child_kinds};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ApiResource;
use serde_json::Value;

fn manifest() -> Vec<Value> {
    common::documents(&common::repo_root().join("deploy/clawdbot-operator.yaml"))
}

fn cluster_role(name: &str) -> Value {
    manifest()
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ClusterRole {name}"))
}

fn grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().unwrap().iter().any(|r| {
        let has = |field: &str, v: &str| {
            r[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == v || x == "*"))
        };
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

#[test]
fn the_operator_may_do_what_the_controller_does() {
    let role = cluster_role("clawdbot-operator");
    let mut kinds = child_kinds(Apis {
        cnpg: true,
        monitoring_v1: true,
        ..Apis::all()
    });
    kinds.push(ApiResource::erase::<Secret>(&()));
    for ar in &kinds {
        // Watched (list, watch), read before a write, applied (patch; an
        // apply that creates also needs create), deleted when unwanted.
        // Claims are created once (the backup volume), never applied.
        let verbs: &[&str] = if ar.plural == "persistentvolumeclaims" {
            &["get", "list", "watch", "create", "delete"]
        } else {
            &["get", "list", "watch", "create", "patch", "delete"]
        };
        for verb in verbs {
            assert!(
                grants(&role, &ar.group, &ar.plural, verb),
                "{verb} on {}/{} is not granted",
                ar.group,
                ar.plural
            );
        }
    }
    for verb in ["get", "list", "watch"] {
        assert!(grants(&role, "clawdbot.io", "clawdbots", verb));
        assert!(grants(&role, "storage.k8s.io", "storageclasses", verb));
    }
    assert!(grants(&role, "clawdbot.io", "clawdbots/status", "patch"));
    assert!(grants(&role, "events.k8s.io", "events", "create"));
}

#[test]
fn block_owner_deletion_is_allowed_by_finalizers_update() {
    // Children's owner references carry blockOwnerDeletion: true; where the
    // OwnerReferencesPermissionEnforcement admission plugin runs, setting it
    // needs update on the owner's finalizers subresource.
    let role = cluster_role("clawdbot-operator");
    assert!(grants(
        &role,
        "clawdbot.io",
        "clawdbots/finalizers",
        "update"
    ));
}

#[test]
fn namespace_users_get_clawdbots_through_the_built_in_roles() {
    let editor = cluster_role("clawdbot-editor");
    let labels = &editor["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(grants(&editor, "clawdbot.io", "clawdbots", verb), "{verb}");
    }
    assert!(grants(&editor, "clawdbot.io", "clawdbots/scale", "update"));
    let viewer = cluster_role("clawdbot-viewer");
    assert_eq!(
        viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    for verb in ["get", "list", "watch"] {
        assert!(grants(&viewer, "clawdbot.io", "clawdbots", verb), "{verb}");
    }
    assert!(!grants(&viewer, "clawdbot.io", "clawdbots", "update"));
}
