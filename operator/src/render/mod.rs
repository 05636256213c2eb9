//! Pure builders: a ClawdBot in, the child objects it wants out. The
//! controller applies them and `clawdbot-operator render` prints them, from
//! the same code.

pub mod alerts;
mod config;
mod extras;
pub mod monitoring;
pub mod postgres;
pub mod redis;
mod runtime;
mod stateful;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::monitoring::{PrometheusRule, ServiceMonitor};
use crate::crd::{ClawdBot, DatabaseSpec, RedisSpec};
use crate::labels;

pub use config::{
    DRAIN_DEADLINE_SECS, api_keys_ref, database_url_ref, redis_url_ref, referenced_secrets,
    runtime_config, secret_env,
};
pub use extras::{autoscaler, disruption_budget, ingress, network_policy};
pub use runtime::{
    api_keys_secret, config_map, deployment, desired_replicas, service, service_account,
};

/// Every child a ClawdBot wants, in apply order. Generated credentials
/// are not here: the controller creates them once (see `redis` and
/// `postgres`), and `connections` is built from what it read.
#[derive(Clone, Debug)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    pub disruption_budget: Option<PodDisruptionBudget>,
    pub network_policy: Option<NetworkPolicy>,
    pub ingress: Option<Ingress>,
    pub redis: Option<StatefulChildren>,
    pub database: Option<StatefulChildren>,
    pub backup: Option<(CronJob, PersistentVolumeClaim)>,
    pub cnpg_cluster: Option<DynamicObject>,
    pub service_monitor: Option<ServiceMonitor>,
    pub prometheus_rule: Option<PrometheusRule>,
    pub dashboard: Option<ConfigMap>,
}

/// A managed Redis or PostgreSQL: StatefulSet, Service and NetworkPolicy,
/// all named `<bot>-redis` or `<bot>-db`.
#[derive(Clone, Debug)]
pub struct StatefulChildren {
    pub statefulset: StatefulSet,
    pub service: Service,
    pub network_policy: NetworkPolicy,
}

/// Inputs that do not come from the ClawdBot itself.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Digest of the referenced Secrets' contents (empty offline), so a
    /// changed credential rolls the pods.
    pub secrets_digest: String,
    /// Runtime image when the spec names none.
    pub default_image: String,
    /// Digest of managed Redis's password Secret (restarts Redis on change).
    pub redis_digest: String,
    /// Digest of a managed database's credentials Secret.
    pub database_digest: String,
    /// The operator's namespace, admitted to the runtime port by the bot's
    /// NetworkPolicy so the operator can read /health/ready.
    pub operator_namespace: Option<String>,
}

pub fn build(cb: &ClawdBot, inputs: &Inputs) -> anyhow::Result<Children> {
    let config_map = config_map(cb)?;
    let hash = config_hash(&config_map, &inputs.secrets_digest);
    let redis = match &cb.spec.redis {
        Some(RedisSpec {
            managed: Some(m), ..
        }) => Some(StatefulChildren {
            statefulset: redis::statefulset(cb, m, &inputs.redis_digest),
            service: redis::service(cb),
            network_policy: redis::network_policy(cb),
        }),
        _ => None,
    };
    let managed_db = match &cb.spec.database {
        Some(DatabaseSpec {
            managed: Some(m), ..
        }) => Some(m),
        _ => None,
    };
    let database = managed_db.map(|m| StatefulChildren {
        statefulset: postgres::statefulset(cb, m, &inputs.database_digest),
        service: postgres::service(cb),
        network_policy: postgres::network_policy(cb),
    });
    let backup = managed_db.and_then(|m| {
        let b = m.backup.as_ref().filter(|b| b.enabled)?;
        Some((
            postgres::backup_cronjob(cb, m, b),
            postgres::backup_claim(cb, m, b),
        ))
    });
    let cnpg_cluster = cb
        .spec
        .database
        .as_ref()
        .and_then(|d| d.cloud_native_pg.as_ref())
        .map(|c| postgres::cnpg_cluster(cb, c));
    Ok(Children {
        service_account: service_account(cb),
        deployment: deployment(cb, &hash, &inputs.default_image),
        service: service(cb),
        autoscaler: autoscaler(cb),
        disruption_budget: disruption_budget(cb),
        network_policy: network_policy(cb, inputs.operator_namespace.as_deref()),
        ingress: ingress(cb),
        config_map,
        redis,
        database,
        backup,
        cnpg_cluster,
        service_monitor: monitoring::service_monitor(cb),
        prometheus_rule: monitoring::prometheus_rule(cb),
        dashboard: monitoring::grafana_dashboard(cb),
    })
}

/// The Secret with the runtime's REDIS_URL and DATABASE_URL for managed
/// components, built from the generated credentials; None when nothing is
/// managed.
pub fn connections_secret(
    cb: &ClawdBot,
    redis_url: Option<String>,
    database_url: Option<String>,
) -> Option<Secret> {
    let mut data = BTreeMap::new();
    if let Some(u) = redis_url {
        data.insert(labels::REDIS_URL_KEY.to_owned(), ByteString(u.into_bytes()));
    }
    if let Some(u) = database_url {
        data.insert(
            labels::DATABASE_URL_KEY.to_owned(),
            ByteString(u.into_bytes()),
        );
    }
    (!data.is_empty()).then(|| Secret {
        metadata: child_meta(
            cb,
            labels::connections_secret_name(&cb.name_any()),
            labels::RUNTIME,
        ),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Every StorageClass the spec names, with the field naming it.
/// PersistentVolumeClaims the bot's pod mounts but the operator does not
/// create (the user's), each with the field that names it.
pub fn user_claims(cb: &ClawdBot) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(c) = runtime::local_model_claim(&cb.spec) {
        out.push(("spec.model.local.persistentVolumeClaim", c.to_owned()));
    }
    if let Some(c) = cb
        .spec
        .knowledge
        .as_ref()
        .and_then(|k| k.persistent_volume_claim.as_ref())
    {
        out.push(("spec.knowledge.persistentVolumeClaim", c.clone()));
    }
    out
}

pub fn storage_classes(cb: &ClawdBot) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(p) = cb
        .spec
        .redis
        .as_ref()
        .and_then(|r| r.managed.as_ref())
        .and_then(|m| m.persistence.as_ref())
        && let Some(c) = &p.storage_class_name
    {
        out.push(("spec.redis.managed.persistence.storageClassName", c.clone()));
    }
    if let Some(d) = &cb.spec.database {
        if let Some(m) = &d.managed {
            if let Some(c) = &m.storage_class_name {
                out.push(("spec.database.managed.storageClassName", c.clone()));
            }
            if let Some(c) = m
                .backup
                .as_ref()
                .filter(|b| b.enabled)
                .and_then(|b| b.volume.as_ref())
                .and_then(|v| v.storage_class_name.as_ref())
            {
                out.push((
                    "spec.database.managed.backup.volume.storageClassName",
                    c.clone(),
                ));
            }
        }
        if let Some(c) = d
            .cloud_native_pg
            .as_ref()
            .and_then(|c| c.storage.storage_class.as_ref())
        {
            out.push((
                "spec.database.cloudNativePG.storage.storageClass",
                c.clone(),
            ));
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for
/// user names and passwords inside a URL.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Children {
    /// The children as YAML documents, for `render`.
    pub fn to_yaml_documents(&self) -> anyhow::Result<Vec<String>> {
        let mut docs = vec![
            yaml(&self.service_account)?,
            yaml(&self.config_map)?,
            yaml(&self.deployment)?,
            yaml(&self.service)?,
        ];
        if let Some(o) = &self.autoscaler {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.disruption_budget {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.network_policy {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.ingress {
            docs.push(yaml(o)?);
        }
        for s in [&self.redis, &self.database].into_iter().flatten() {
            docs.push(yaml(&s.statefulset)?);
            docs.push(yaml(&s.service)?);
            docs.push(yaml(&s.network_policy)?);
        }
        if let Some((job, claim)) = &self.backup {
            docs.push(yaml(claim)?);
            docs.push(yaml(job)?);
        }
        if let Some(o) = &self.cnpg_cluster {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.service_monitor {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.prometheus_rule {
            docs.push(yaml(o)?);
        }
        if let Some(o) = &self.dashboard {
            docs.push(yaml(o)?);
        }
        Ok(docs)
    }
}

fn yaml<T: Serialize>(o: &T) -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(o)?)
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub fn child_meta(cb: &ClawdBot, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cb.namespace(),
        labels: Some(labels::labels(&cb.name_any(), component)),
        owner_references: owner_ref(cb).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The controller reference to the ClawdBot; absent in offline renders,
/// which have no uid to point at.
fn owner_ref(cb: &ClawdBot) -> Option<OwnerReference> {
    cb.controller_owner_ref(&()).map(|mut o| {
        // Foreground deletion of the ClawdBot waits for its children.
        o.block_owner_deletion = Some(true);
        o
    })
}

pub fn config_hash_annotation() -> String {
    labels::CONFIG_HASH_ANNOTATION.to_owned()
}

fn config_hash(cm: &ConfigMap, secrets_digest: &str) -> String {
    let mut h = Sha256::new();
    if let Some(data) = &cm.data {
        for (k, v) in data {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    h.update(secrets_digest.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Digest of Secret contents, keyed by name and key, stable in order.
pub fn secrets_digest<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a Secret)>) -> String {
    let mut items: Vec<_> = secrets.into_iter().collect();
    items.sort_by_key(|(name, _)| *name);
    let mut h = Sha256::new();
    for (name, s) in items {
        h.update(name.as_bytes());
        h.update([0]);
        for (k, v) in s.data.iter().flatten() {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(&v.0);
            h.update([0]);
        }
        for (k, v) in s.string_data.iter().flatten() {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    hex::encode(&h.finalize()[..16])
}
