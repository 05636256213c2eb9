//! Optional children: autoscaler, disruption budget, network policy, ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::child_meta;
use crate::crd::ClawdBot;
use crate::labels::{self, HTTP_PORT, METRICS_PORT};

fn pod_selector(cb: &ClawdBot) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels::selector(&cb.name_any())),
        ..LabelSelector::default()
    }
}

/// An HPA whose target is the ClawdBot itself (its scale subresource), so
/// the autoscaler and the operator never both write Deployment replicas.
pub fn autoscaler(cb: &ClawdBot) -> Option<HorizontalPodAutoscaler> {
    let a = cb.spec.autoscaling.as_ref().filter(|a| a.enabled)?;
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(cb, cb.name_any(), "runtime"),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(ClawdBot::api_version(&()).into_owned()),
                kind: ClawdBot::kind(&()).into_owned(),
                name: cb.name_any(),
            },
            min_replicas: Some(a.min_replicas.unwrap_or(1)),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization.unwrap_or(70)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

pub fn disruption_budget(cb: &ClawdBot) -> Option<PodDisruptionBudget> {
    let d = cb.spec.disruption_budget.as_ref().filter(|d| d.enabled)?;
    let (min_available, max_unavailable) = match (d.min_available, d.max_unavailable) {
        (Some(min), _) => (Some(IntOrString::Int(min)), None),
        (None, max) => (None, Some(IntOrString::Int(max.unwrap_or(1)))),
    };
    Some(PodDisruptionBudget {
        metadata: child_meta(cb, cb.name_any(), "runtime"),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(pod_selector(cb)),
            min_available,
            max_unavailable,
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// Ingress to the bot's port from its own namespace, the listed ones and
/// the operator's (which reads /health/ready); egress is left open (models
/// and IM platforms live outside).
pub fn network_policy(cb: &ClawdBot, operator_namespace: Option<&str>) -> Option<NetworkPolicy> {
    let n = cb.spec.network_policy.as_ref().filter(|n| n.enabled)?;
    let mut from = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }];
    let mut namespaces = n.allowed_namespaces.clone();
    if let Some(op) = operator_namespace
        && Some(op) != cb.namespace().as_deref()
        && !namespaces.iter().any(|n| n == op)
    {
        namespaces.push(op.to_owned());
    }
    if !namespaces.is_empty() {
        from.push(namespaces_peer(namespaces));
    }
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![tcp_port(HTTP_PORT)]),
    }];
    // Metrics: Prometheus's namespaces only, on their own port.
    if !n.monitoring_namespaces.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![namespaces_peer(n.monitoring_namespaces.clone())]),
            ports: Some(vec![tcp_port(METRICS_PORT)]),
        });
    }
    Some(NetworkPolicy {
        metadata: child_meta(cb, cb.name_any(), "runtime"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(cb)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

fn namespaces_peer(names: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "In".into(),
                values: Some(names),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

pub fn ingress(cb: &ClawdBot) -> Option<Ingress> {
    let i = cb.spec.ingress.as_ref().filter(|i| i.enabled)?;
    let host = i.host.clone()?;
    let mut meta = child_meta(cb, cb.name_any(), "runtime");
    if !i.annotations.is_empty() {
        meta.annotations = Some(
            i.annotations
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        );
    }
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone(),
            tls: i.tls_secret_name.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: cb.name_any(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}
