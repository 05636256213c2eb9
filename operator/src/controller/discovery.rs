//! Which optional APIs the cluster serves. Asked again every interval, so
//! an API installed later (CloudNativePG, an autoscaler) is picked up
//! without restarting the operator; a failed answer is an error to retry,
//! never "the API is absent".

use kube::Client;

/// Optional APIs: children of absent kinds are neither watched nor applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Apis {
    pub autoscaling_v2: bool,
    pub policy_v1: bool,
    pub networking_v1: bool,
    pub batch_v1: bool,
    pub storage_v1: bool,
    /// CloudNativePG's `postgresql.cnpg.io/v1` Cluster.
    pub cnpg: bool,
    /// The Prometheus Operator's `monitoring.coreos.com/v1` ServiceMonitor
    /// and PrometheusRule (both needed).
    pub monitoring_v1: bool,
}

impl Apis {
    /// Every API of a current cluster, the add-on operators' aside.
    pub fn all() -> Self {
        Self {
            autoscaling_v2: true,
            policy_v1: true,
            networking_v1: true,
            batch_v1: true,
            storage_v1: true,
            cnpg: false,
            monitoring_v1: false,
        }
    }

    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        Ok(Self {
            autoscaling_v2: serves(client, "autoscaling/v2", "horizontalpodautoscalers").await?,
            policy_v1: serves(client, "policy/v1", "poddisruptionbudgets").await?,
            networking_v1: serves(client, "networking.k8s.io/v1", "networkpolicies").await?,
            batch_v1: serves(client, "batch/v1", "cronjobs").await?,
            storage_v1: serves(client, "storage.k8s.io/v1", "storageclasses").await?,
            cnpg: serves(client, "postgresql.cnpg.io/v1", "clusters").await?,
            monitoring_v1: serves_all(
                client,
                MONITORING_V1,
                &["servicemonitors", "prometheusrules"],
            )
            .await?,
        })
    }

    /// The kinds `self` has that `before` had not, for the log.
    pub fn added_since(&self, before: &Apis) -> Vec<&'static str> {
        let pairs = [
            (
                self.autoscaling_v2 && !before.autoscaling_v2,
                "autoscaling/v2",
            ),
            (self.policy_v1 && !before.policy_v1, "policy/v1"),
            (
                self.networking_v1 && !before.networking_v1,
                "networking.k8s.io/v1",
            ),
            (self.batch_v1 && !before.batch_v1, "batch/v1"),
            (self.storage_v1 && !before.storage_v1, "storage.k8s.io/v1"),
            (self.cnpg && !before.cnpg, "postgresql.cnpg.io/v1"),
            (self.monitoring_v1 && !before.monitoring_v1, MONITORING_V1),
        ];
        pairs.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect()
    }
}

pub const MONITORING_V1: &str = "monitoring.coreos.com/v1";

async fn serves(client: &Client, gv: &str, plural: &str) -> Result<bool, kube::Error> {
    serves_all(client, gv, &[plural]).await
}

/// Whether the group version serves every one of `plurals`. One that is
/// not served answers 404; anything else that fails is an error.
async fn serves_all(client: &Client, gv: &str, plurals: &[&str]) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(gv).await {
        Ok(list) => Ok(plurals
            .iter()
            .all(|p| list.resources.iter().any(|r| r.name == *p))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The Kubernetes release the operator needs: the runtime pods' preStop
/// `sleep` action is served from 1.30 on.
pub const MIN_KUBERNETES: (u32, u32) = (1, 30);

/// `(major, minor)` of a version answer; minor may carry a `+` (GKE, EKS).
pub fn server_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Some((digits(major)?, digits(minor)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(server_version("1", "35"), Some((1, 35)));
        assert_eq!(server_version("1", "29+"), Some((1, 29)));
        assert!(server_version("1", "29+").unwrap() < MIN_KUBERNETES);
        assert!(server_version("1", "30").unwrap() >= MIN_KUBERNETES);
        assert_eq!(server_version("", "30"), None);
    }

    #[test]
    fn added_apis_are_named() {
        let before = Apis::all();
        let after = Apis {
            cnpg: true,
            ..before
        };
        assert_eq!(after.added_since(&before), vec!["postgresql.cnpg.io/v1"]);
        assert!(before.added_since(&after).is_empty());
    }
}
