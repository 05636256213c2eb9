//! The API permissions the operator needs, derived from what it watches
//! and writes. `clawdbot-operator permissions` prints them; the Helm
//! chart's tests compare its rendered Roles with this list, so a new child
//! kind cannot ship without its RBAC rule.

use serde::Serialize;

use crate::controller::{Apis, child_kinds};

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// In every namespace whose ClawdBots it reconciles.
    Watched,
    /// Cluster-scoped resources.
    Cluster,
    /// In its own namespace (the leader-election Lease, its own Events).
    Own,
}

/// One resource and the verbs used on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    pub api_group: String,
    pub resource: String,
    pub verbs: Vec<&'static str>,
    pub scope: Scope,
    pub why: &'static str,
}

const READ: [&str; 3] = ["get", "list", "watch"];
const MANAGE: [&str; 7] = [
    "get", "list", "watch", "create", "patch", "update", "delete",
];

fn permission(
    group: &str,
    resource: &str,
    verbs: &[&'static str],
    scope: Scope,
    why: &'static str,
) -> Permission {
    Permission {
        api_group: group.to_owned(),
        resource: resource.to_owned(),
        verbs: verbs.to_vec(),
        scope,
        why,
    }
}

/// Every permission, with every optional API (CloudNativePG, the
/// Prometheus Operator) present.
pub fn required() -> Vec<Permission> {
    use Scope::{Cluster, Own, Watched};
    let mut all = vec![
        permission(
            "clawdbot.io",
            "clawdbots",
            &READ,
            Watched,
            "what it reconciles; it never writes a spec",
        ),
        permission(
            "clawdbot.io",
            "clawdbots/status",
            &["get", "patch", "update"],
            Watched,
            "conditions and observed state",
        ),
        permission(
            "clawdbot.io",
            "clawdbots/finalizers",
            &["update"],
            Watched,
            "children's ownerReferences set blockOwnerDeletion, which OwnerReferencesPermissionEnforcement checks against this",
        ),
        permission(
            "",
            "secrets",
            &["get", "list", "watch", "create", "patch", "delete"],
            Watched,
            "watches referenced Secrets, creates generated credentials once, applies the connections Secret; never updates",
        ),
        permission(
            "storage.k8s.io",
            "storageclasses",
            &READ,
            Cluster,
            "checks that a requested storageClassName exists",
        ),
        permission(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "patch", "update"],
            Own,
            "leader election",
        ),
        permission(
            "events.k8s.io",
            "events",
            &["create", "patch"],
            Watched,
            "Events about ClawdBots",
        ),
        permission(
            "events.k8s.io",
            "events",
            &["create", "patch"],
            Own,
            "Events about its own Pod",
        ),
    ];
    let apis = Apis {
        cnpg: true,
        monitoring_v1: true,
        ..Apis::all()
    };
    for kind in child_kinds(apis) {
        let (verbs, why): (&[&'static str], _) = match kind.plural.as_str() {
            // Claims are checked and created (backups), never edited.
            "persistentvolumeclaims" => (
                &["get", "list", "watch", "create", "delete"],
                "data and backup volumes",
            ),
            _ => (&MANAGE, "a child object it renders, applies and prunes"),
        };
        all.push(permission(&kind.group, &kind.plural, verbs, Watched, why));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_kind_is_listed_once_per_scope() {
        let all = required();
        let mut seen = std::collections::HashSet::new();
        for p in &all {
            assert!(
                seen.insert((p.api_group.clone(), p.resource.clone(), p.scope)),
                "{}/{} listed twice",
                p.api_group,
                p.resource
            );
            assert!(!p.verbs.is_empty() && !p.verbs.contains(&"*"));
        }
        for plural in [
            "deployments",
            "statefulsets",
            "clusters",
            "servicemonitors",
            "prometheusrules",
        ] {
            assert!(all.iter().any(|p| p.resource == plural), "{plural} missing");
        }
    }
}
