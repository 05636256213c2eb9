//! Pure builders: a ClawdBot in, the child objects it wants out. The
//! controller applies them and `clawdbot-operator render` prints them, from
//! the same code.

mod config;
mod extras;
mod runtime;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::ClawdBot;
use crate::labels;

pub use config::{
    DRAIN_DEADLINE_SECS, api_keys_ref, referenced_secrets, runtime_config, secret_env,
};
pub use extras::{autoscaler, disruption_budget, ingress, network_policy};
pub use runtime::{
    api_keys_secret, config_map, deployment, desired_replicas, service, service_account,
};

/// Every child a ClawdBot wants, in apply order.
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
}

/// Inputs that do not come from the ClawdBot itself.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Digest of the referenced Secrets' contents (empty offline), so a
    /// changed credential rolls the pods.
    pub secrets_digest: String,
    /// Runtime image when the spec names none.
    pub default_image: String,
}

pub fn build(cb: &ClawdBot, inputs: &Inputs) -> anyhow::Result<Children> {
    let config_map = config_map(cb)?;
    let hash = config_hash(&config_map, &inputs.secrets_digest);
    Ok(Children {
        service_account: service_account(cb),
        deployment: deployment(cb, &hash, &inputs.default_image),
        service: service(cb),
        autoscaler: autoscaler(cb),
        disruption_budget: disruption_budget(cb),
        network_policy: network_policy(cb),
        ingress: ingress(cb),
        config_map,
    })
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
