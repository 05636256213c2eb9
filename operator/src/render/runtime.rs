//! The bot-runtime workload: ConfigMap, Deployment, Service, ServiceAccount,
//! and the generated API key Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, Service, ServiceAccount, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config::{DATA_DIR, DRAIN_DEADLINE_SECS, runtime_config, secret_env};
use super::{child_meta, config_hash_annotation};
use crate::crd::{ClawdBot, ClawdBotSpec, KnowledgeSpec, ModelBackend};
use crate::labels::{self, HTTP_PORT, METRICS_PORT};

const CONFIG_DIR: &str = "/etc/clawdbot";
/// Where `spec.knowledge` is mounted, by source.
pub const KNOWLEDGE_CONFIGMAP_DIR: &str = "/etc/clawdbot/knowledge";
pub const KNOWLEDGE_CLAIM_DIR: &str = "/var/lib/clawdbot/knowledge";
/// Where `spec.model.local.persistentVolumeClaim` is mounted.
pub const MODELS_CLAIM_DIR: &str = "/var/lib/clawdbot/models";

/// The claim holding the local model file, when `backend: Local` uses one.
pub fn local_model_claim(spec: &ClawdBotSpec) -> Option<&str> {
    (spec.model.backend == Some(ModelBackend::Local))
        .then(|| {
            spec.model
                .local
                .as_ref()?
                .persistent_volume_claim
                .as_deref()
        })
        .flatten()
}
const CONFIG_FILE: &str = "config.yaml";
/// Seconds the pod keeps serving after it is marked for deletion, so load
/// balancers stop sending to it before the runtime starts draining.
const PRE_STOP_SLEEP_SECS: i64 = 5;

pub fn service_account(cb: &ClawdBot) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(cb, cb.name_any(), "runtime"),
        // bot-runtime never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub fn config_map(cb: &ClawdBot) -> anyhow::Result<ConfigMap> {
    let yaml = clawdbot_config::to_yaml(&runtime_config(cb));
    Ok(ConfigMap {
        metadata: child_meta(cb, labels::config_map_name(&cb.name_any()), "runtime"),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

/// Replicas mirrored to the Deployment: the ClawdBot's scale subresource
/// (spec.replicas) is the one source of truth; unset means 1, or the
/// autoscaler's minimum.
pub fn desired_replicas(cb: &ClawdBot) -> i32 {
    cb.spec.replicas.unwrap_or_else(|| {
        cb.spec
            .autoscaling
            .as_ref()
            .filter(|a| a.enabled)
            .and_then(|a| a.min_replicas)
            .unwrap_or(1)
    })
}

/// Without `spec.resources`: small, or, with the model in the pod
/// (`backend: Local`), room for it (the default model takes about 250 MB;
/// 256Mi would get the pod killed).
fn default_resources(local_model: bool) -> ResourceRequirements {
    let (request, limit) = if local_model {
        ("384Mi", "512Mi")
    } else {
        ("64Mi", "256Mi")
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".into())),
            ("memory".to_owned(), Quantity(request.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub fn deployment(cb: &ClawdBot, config_hash: &str, default_image: &str) -> Deployment {
    let name = cb.name_any();
    let spec = &cb.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels::labels(&name, "runtime"));
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(config_hash_annotation(), config_hash.to_owned());
    let (env, env_from) = secret_env(cb);

    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: labels::config_map_name(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let read_only = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let claim = |name: &str, claim: &str| Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: Some(true),
        }),
        ..Volume::default()
    };
    match spec.knowledge.as_ref() {
        Some(KnowledgeSpec { name: Some(cm), .. }) => {
            mounts.push(read_only("knowledge", KNOWLEDGE_CONFIGMAP_DIR));
            volumes.push(Volume {
                name: "knowledge".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: cm.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        Some(KnowledgeSpec {
            persistent_volume_claim: Some(pvc),
            ..
        }) => {
            mounts.push(read_only("knowledge", KNOWLEDGE_CLAIM_DIR));
            volumes.push(claim("knowledge", pvc));
        }
        _ => {}
    }
    if let Some(pvc) = local_model_claim(spec) {
        mounts.push(read_only("models", MODELS_CLAIM_DIR));
        volumes.push(claim("models", pvc));
    }

    let container =
        Container {
            name: "bot-runtime".into(),
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| default_image.to_owned()),
            ),
            image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
            args: Some(vec![
                "serve".into(),
                "--config".into(),
                format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            ]),
            ports: Some(vec![
                ContainerPort {
                    name: Some("http".into()),
                    container_port: HTTP_PORT,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some(super::monitoring::METRICS_PORT_NAME.into()),
                    container_port: METRICS_PORT,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
            ]),
            env: Some(env),
            env_from: (!env_from.is_empty()).then_some(env_from),
            resources: Some(spec.resources.clone().unwrap_or_else(|| {
                default_resources(spec.model.backend == Some(ModelBackend::Local))
            })),
            liveness_probe: Some(probe("/health/live", 10, 3)),
            readiness_probe: Some(probe("/health/ready", 5, 2)),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction {
                        seconds: PRE_STOP_SLEEP_SECS,
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            security_context: Some(super::stateful::restricted_container()),
            volume_mounts: Some(mounts),
            ..Container::default()
        };

    Deployment {
        metadata: child_meta(cb, name.clone(), "runtime"),
        spec: Some(DeploymentSpec {
            replicas: Some(desired_replicas(cb)),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(labels::selector(&name)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    automount_service_account_token: Some(false),
                    // Service links would inject CLAWDBOT_* variables for a
                    // Service named "clawdbot" into the runtime's config namespace.
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(
                        PRE_STOP_SLEEP_SECS + DRAIN_DEADLINE_SECS as i64 + 10,
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                        .then(|| spec.image_pull_secrets.clone()),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then_some(overrides.node_selector),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then_some(overrides.tolerations),
                    affinity: overrides.affinity,
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(cb: &ClawdBot) -> Service {
    let name = cb.name_any();
    Service {
        metadata: child_meta(cb, name.clone(), "runtime"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels::selector(&name)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: HTTP_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                // What a ServiceMonitor selects by name; the Ingress routes
                // to `http` only.
                ServicePort {
                    name: Some(super::monitoring::METRICS_PORT_NAME.into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String(
                        super::monitoring::METRICS_PORT_NAME.into(),
                    )),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The API key Secret generated when the spec names none: one admin key,
/// made once (create, never apply, so it is not regenerated).
pub fn api_keys_secret(cb: &ClawdBot, key: &str) -> Secret {
    Secret {
        metadata: child_meta(cb, labels::api_keys_secret_name(&cb.name_any()), "runtime"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            labels::API_KEYS_KEY.to_owned(),
            ByteString(format!("{key}:admin").into_bytes()),
        )])),
        ..Secret::default()
    }
}
