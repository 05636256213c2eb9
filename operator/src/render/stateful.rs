//! What managed Redis and PostgreSQL have in common: a one-replica
//! StatefulSet under the restricted pod security standard, its Service, a
//! NetworkPolicy that admits only this bot's pods, and generated credentials.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, config_hash_annotation};
use crate::crd::{ClawdBot, VolumeSpec};
use crate::labels::{self, DATA_VOLUME};

/// UID and GID the official redis and postgres images run as.
pub const IMAGE_UID: i64 = 999;

/// A one-replica StatefulSet of one component.
pub struct StatefulParts<'a> {
    pub name: String,
    pub component: &'a str,
    pub container: Container,
    pub volumes: Vec<Volume>,
    pub claim: Option<PersistentVolumeClaim>,
    /// `Retain` or `Delete` for the claim when the StatefulSet is deleted.
    pub when_deleted: &'a str,
    /// Digest of what the pods read at start (credentials), so a change
    /// restarts them.
    pub hash: &'a str,
    pub annotations: BTreeMap<String, String>,
}

pub fn statefulset(cb: &ClawdBot, p: StatefulParts) -> StatefulSet {
    let bot = cb.name_any();
    let mut pod_annotations = p.annotations.clone();
    pod_annotations.insert(config_hash_annotation(), p.hash.to_owned());
    let mut meta = child_meta(cb, p.name.clone(), p.component);
    if !p.annotations.is_empty() {
        meta.annotations = Some(p.annotations);
    }
    StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(p.name.clone()),
            selector: LabelSelector {
                match_labels: Some(labels::component_selector(&bot, p.component)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: p.claim.as_ref().map(|_| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(p.when_deleted.to_owned()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates: p.claim.map(|c| vec![c]),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::labels(&bot, p.component)),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(restricted_pod(vec![p.container], p.volumes)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// A pod spec under the restricted Pod Security Standard, as the image's
/// non-root user, with no service account token.
pub fn restricted_pod(containers: Vec<Container>, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(IMAGE_UID),
            run_as_group: Some(IMAGE_UID),
            fs_group: Some(IMAGE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers,
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

pub fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

pub fn empty_dir(name: &str, limit: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: limit.map(|l| Quantity(l.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The `data` claim template (or a standalone claim when `name` is given).
pub fn claim(
    cb: &ClawdBot,
    name: Option<String>,
    component: &str,
    size: &str,
    class: Option<&String>,
) -> PersistentVolumeClaim {
    let bot = cb.name_any();
    let metadata = match name {
        Some(n) => child_meta(cb, n, component),
        None => ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels::labels(&bot, component)),
            ..ObjectMeta::default()
        },
    };
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class.cloned(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

pub fn volume_claim(cb: &ClawdBot, component: &str, v: &VolumeSpec) -> PersistentVolumeClaim {
    claim(cb, None, component, &v.size, v.storage_class_name.as_ref())
}

pub fn resources(
    given: Option<&ResourceRequirements>,
    cpu: &str,
    memory: &str,
    limit: &str,
) -> ResourceRequirements {
    given.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.into()),
        )])),
        ..ResourceRequirements::default()
    })
}

/// A probe running a shell command in the container.
pub fn exec_probe(script: &str, period: i32, failures: i32, initial_delay: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        }),
        initial_delay_seconds: (initial_delay > 0).then_some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn service(
    cb: &ClawdBot,
    name: String,
    component: &str,
    port_name: &str,
    port: i32,
) -> Service {
    Service {
        metadata: child_meta(cb, name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels::component_selector(&cb.name_any(), component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Ingress to `component`'s pods on `port` only from these components of
/// the same bot.
pub fn network_policy(
    cb: &ClawdBot,
    name: String,
    component: &str,
    port: i32,
    clients: &[&str],
) -> NetworkPolicy {
    let bot = cb.name_any();
    NetworkPolicy {
        metadata: child_meta(cb, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::component_selector(&bot, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(
                    clients
                        .iter()
                        .map(|c| NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector {
                                match_labels: Some(labels::component_selector(&bot, c)),
                                ..LabelSelector::default()
                            }),
                            ..NetworkPolicyPeer::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// A generated credentials Secret: created once, never applied again, so
/// reconciles and operator restarts never change it.
pub fn generated_secret(
    cb: &ClawdBot,
    name: String,
    component: &str,
    data: &[(&str, &str)],
) -> Secret {
    Secret {
        metadata: child_meta(cb, name, component),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}
