//! Where a bot keeps its shared state: `spec.redis` (sessions, IM
//! deliveries) and `spec.database` (conversation logs). Each is a union
//! chosen by which member is present: the operator runs it (`managed`),
//! CloudNativePG runs it (`cloudNativePG`), or you do (`external`).

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// Redis image of managed Redis when `image` is unset.
pub const REDIS_IMAGE: &str = "redis:7.4.2";
/// PostgreSQL image of a managed database when `image` is unset. The tag
/// starts with the major version, which the operator reads from it.
pub const POSTGRES_IMAGE: &str = "postgres:17.6";

/// Pattern of a Kubernetes quantity (`1Gi`, `500M`, `10`), as the API server checks it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Redis for chat sessions and IM deliveries, shared by every replica. Set
/// exactly one of `managed` and `external`. Leave `spec.redis` out for
/// in-memory sessions in each pod, which is allowed only with one replica
/// and no autoscaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("set exactly one of redis.managed and redis.external"))]
pub struct RedisSpec {
    /// A Redis the operator runs for this bot: StatefulSet and Service
    /// `<name>-redis`, password in the Secret `<name>-redis` (generated once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,
    /// A Redis you run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRef>,
}

/// An existing server, reached by the URL in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    /// The Secret key holding the URL: `redis://` or `rediss://` for Redis,
    /// `postgres://` or `mysql://` for the database.
    pub url_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedis {
    /// Redis image. Default: the official image the operator was tested with
    /// (redis:7.4.2). It must run as UID 999 like the official one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// A volume with an append-only file, so sessions and queued IM
    /// deliveries survive a restart of the Redis pod. Unset: no persistence
    /// (Redis keeps everything in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<VolumeSpec>,
    /// CPU and memory of the Redis container. Default: requests 50m CPU /
    /// 64Mi, limit 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// A PersistentVolumeClaim's size and class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Size of the volume, a quantity such as 1Gi.
    #[schemars(length(min = 1, max = 64), regex(pattern = QUANTITY_PATTERN))]
    pub size: String,
    /// StorageClass of the volume. Unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// The conversation log database. Set exactly one of `managed`,
/// `cloudNativePG` and `external`. Leave `spec.database` out for an SQLite
/// file in each pod's scratch volume (lost with the pod).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.managed), has(self.cloudNativePG), has(self.external)].filter(x, x).size() == 1").message("set exactly one of database.managed, database.cloudNativePG and database.external"))]
pub struct DatabaseSpec {
    /// A PostgreSQL the operator runs for this bot: StatefulSet and Service
    /// `<name>-db`, credentials in the Secret `<name>-db` (generated once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedPostgres>,
    /// A CloudNativePG Cluster `<name>-db` (needs the CloudNativePG operator):
    /// replicas and failover by CloudNativePG (backups: configure them on the Cluster).
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePg>,
    /// A database you run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPostgres {
    /// PostgreSQL image; its tag must start with the major version
    /// (postgres:17.6). Default postgres:17.6. A new major version cannot read
    /// an older one's files: on a volume that holds data the operator refuses
    /// the change (Degraded, MajorVersionChange) instead of starting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Size of the data volume. Default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = QUANTITY_PATTERN))]
    pub size: Option<String>,
    /// StorageClass of the data volume. Unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Delete the data volume when the ClawdBot is deleted. Default false:
    /// the volume (and your conversation logs) stays until you delete it.
    #[serde(default)]
    pub delete_claim_on_delete: bool,
    /// CPU and memory of the PostgreSQL container. Default: requests 100m CPU
    /// / 256Mi, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduled pg_dump backups to a volume of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Run the backup CronJob `<name>-db-backup`.
    #[serde(default)]
    pub enabled: bool,
    /// Cron schedule (UTC). Default "0 3 * * *": daily at 03:00.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: Option<String>,
    /// Dumps kept; older ones are deleted after a successful dump. Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: Option<u32>,
    /// The backup volume (PersistentVolumeClaim `<name>-db-backup`). Default
    /// size 2Gi. It is kept when the ClawdBot is deleted, like the data volume
    /// unless deleteClaimOnDelete is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePg {
    /// PostgreSQL instances (one primary, the rest streaming replicas).
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub instances: Option<i32>,
    /// Each instance's volume.
    pub storage: CnpgStorage,
    /// PostgreSQL image for CloudNativePG. Unset: CloudNativePG's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgStorage {
    /// Size of each instance's volume, a quantity such as 10Gi.
    #[schemars(length(min = 1, max = 64), regex(pattern = QUANTITY_PATTERN))]
    pub size: String,
    /// StorageClass of the volumes. Unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class: Option<String>,
}

impl ManagedPostgres {
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(POSTGRES_IMAGE)
    }
}

impl ManagedRedis {
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(REDIS_IMAGE)
    }
}

/// The PostgreSQL major version an image's tag starts with
/// (`postgres:17.6` -> 17, `r.example/pg:16-alpine` -> 16). None without a
/// tag or when the tag does not start with digits.
pub fn postgres_major(image: &str) -> Option<u32> {
    let without_digest = image.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|m| *m > 0)
}

/// Whether `s` is a Kubernetes quantity (same grammar as QUANTITY_PATTERN).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let number_ok = match num.split_once('.') {
        None => !num.is_empty(),
        Some((a, b)) => !b.contains('.') && (!a.is_empty() || !b.is_empty()),
    };
    if !number_ok {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exp => {
            let Some(rest) = exp.strip_prefix(['e', 'E']) else {
                return false;
            };
            let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["1Gi", "500M", "10", "1.5Gi", ".5", "1e3", "100m", "+2Ki"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "1GB", "1..2", "Gi", "1 Gi", "1e", "-"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn majors() {
        assert_eq!(postgres_major("postgres:17.6"), Some(17));
        assert_eq!(
            postgres_major("registry:5000/pg/postgres:16-alpine"),
            Some(16)
        );
        assert_eq!(postgres_major("postgres"), None);
        assert_eq!(postgres_major("postgres:latest"), None);
        assert_eq!(postgres_major("postgres@sha256:abc"), None);
    }
}
