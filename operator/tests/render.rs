//! Golden tests of the pure builders (`render::build`), plus targeted checks
//! of what the goldens must always show.
//!
//! Cases: every examples/*.yaml holding a ClawdBot, and operator/tests/fixtures/*.yaml.
//! Each renders (with a fixed uid, as the controller sees a stored object,
//! so owner references show) into operator/tests/golden/<name>.yaml.
//!
//!   UPDATE_GOLDEN=1 cargo test -p clawdbot-operator --test render
//!
//! rewrites the goldens; review the diff by hand before committing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clawdbot_config::{ENV_ALIASES, RuntimeConfig};
use clawdbot_operator::crd::{self, BasicChannel, ClawdBot, DingTalkChannel, SecretRef};
use clawdbot_operator::labels;
use clawdbot_operator::render::{self, Children, Inputs};
use clawdbot_operator::validate;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde_json::Value;

const UID: &str = "00000000-0000-4000-8000-000000000001";

fn inputs() -> Inputs {
    Inputs {
        default_image: crd::DEFAULT_IMAGE.into(),
        ..Inputs::default()
    }
}

fn build(cb: &ClawdBot) -> Children {
    render::build(cb, &inputs()).expect("renders")
}

/// As the controller sees it: stored, so with a uid.
fn stored(mut cb: ClawdBot) -> ClawdBot {
    cb.metadata.uid = Some(UID.into());
    cb
}

fn golden_text(name: &str, source: &Path, children: &Children) -> String {
    let rel = source.strip_prefix(common::repo_root()).unwrap_or(source);
    let mut out = format!(
        "# Rendered from {} by operator/tests/render.rs (metadata.uid set to {UID}).\n\
         # UPDATE_GOLDEN=1 cargo test -p clawdbot-operator --test render rewrites it: {name}\n",
        rel.display()
    );
    for doc in children.to_yaml_documents().expect("children serialize") {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    out
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}:\n  golden:   {w}\n  rendered: {g}", i + 1);
        }
    }
    format!(
        "lengths differ: golden {} lines, rendered {} lines",
        want.lines().count(),
        got.lines().count()
    )
}

#[test]
fn goldens_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0");
    let dir = common::golden_dir();
    std::fs::create_dir_all(&dir).expect("golden dir");
    let mut failures = Vec::new();
    let mut expected_files = BTreeSet::new();
    for (name, path) in common::cases() {
        let cb = stored(common::load_clawdbot(&path));
        let got = golden_text(&name, &path, &build(&cb));
        let file = dir.join(format!("{name}.yaml"));
        expected_files.insert(file.clone());
        if update {
            std::fs::write(&file, &got).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{}: {}",
                file.display(),
                first_difference(&want, &got)
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                file.display()
            )),
        }
    }
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let p = entry.expect("entry").path();
        if !expected_files.contains(&p) {
            failures.push(format!(
                "{}: no example or fixture renders it (stale golden)",
                p.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "goldens differ (UPDATE_GOLDEN=1 cargo test -p clawdbot-operator --test render, then review):\n{}",
        failures.join("\n")
    );
}

/// Every golden case, rendered as the controller would.
fn all_cases() -> Vec<(String, ClawdBot, Children)> {
    common::cases()
        .into_iter()
        .map(|(name, path)| {
            let cb = stored(common::load_clawdbot(&path));
            let children = build(&cb);
            (name, cb, children)
        })
        .collect()
}

fn pod_spec(c: &Children) -> &PodSpec {
    c.deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container(c: &Children) -> &Container {
    let pod = pod_spec(c);
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

fn config_yaml(c: &Children) -> &str {
    c.config_map
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .expect("config.yaml in the ConfigMap")
}

fn config_hash(c: &Children) -> String {
    c.deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(labels::CONFIG_HASH_ANNOTATION))
        .expect("config hash annotation")
        .clone()
}

fn metas(c: &Children) -> Vec<(&'static str, &ObjectMeta)> {
    let mut v: Vec<(&'static str, &ObjectMeta)> = vec![
        ("ServiceAccount", &c.service_account.metadata),
        ("ConfigMap", &c.config_map.metadata),
        ("Deployment", &c.deployment.metadata),
        ("Service", &c.service.metadata),
    ];
    if let Some(o) = &c.autoscaler {
        v.push(("HorizontalPodAutoscaler", &o.metadata));
    }
    if let Some(o) = &c.disruption_budget {
        v.push(("PodDisruptionBudget", &o.metadata));
    }
    if let Some(o) = &c.network_policy {
        v.push(("NetworkPolicy", &o.metadata));
    }
    if let Some(o) = &c.ingress {
        v.push(("Ingress", &o.metadata));
    }
    v
}

#[test]
fn pods_are_locked_down() {
    for (name, _, c) in all_cases() {
        let pod = pod_spec(&c);
        let psc = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true), "{name}: pod runAsNonRoot");
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{name}: seccomp"
        );
        let sc = container(&c)
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(sc.run_as_non_root, Some(true), "{name}: runAsNonRoot");
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{name}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{name}: allowPrivilegeEscalation"
        );
        assert_eq!(sc.privileged, None, "{name}: privileged");
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{name}: drop ALL"
        );
        assert_eq!(caps.add, None, "{name}: no added capabilities");
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "{name}: pod token"
        );
        assert_eq!(
            c.service_account.automount_service_account_token,
            Some(false),
            "{name}: SA token"
        );
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(name_of(&c)),
            "{name}: own SA"
        );
        assert_eq!(
            pod.enable_service_links,
            Some(false),
            "{name}: service links off"
        );
        assert_eq!(pod.host_network, None, "{name}: hostNetwork");
    }
}

fn name_of(c: &Children) -> &str {
    c.deployment.metadata.name.as_deref().expect("name")
}

#[test]
fn probes_ports_and_shutdown() {
    for (name, _, c) in all_cases() {
        let ctr = container(&c);
        let ports = ctr.ports.as_ref().expect("ports");
        let named: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(
            named,
            [
                (Some("http"), labels::HTTP_PORT),
                (Some("metrics"), labels::METRICS_PORT)
            ],
            "{name}"
        );
        for (probe, path) in [
            (&ctr.liveness_probe, "/health/live"),
            (&ctr.readiness_probe, "/health/ready"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("httpGet probe");
            assert_eq!(get.path.as_deref(), Some(path), "{name}");
            assert_eq!(
                get.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()),
                "{name}: probe port by name"
            );
        }
        assert!(ctr.startup_probe.is_none());
        let sleep = ctr
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.as_ref())
            .expect("preStop sleep")
            .seconds;
        assert!(sleep > 0, "{name}: preStop sleep");
        // Channel credentials come from the Secrets as environment.
        let cfg: RuntimeConfig = clawdbot_config::load(config_yaml(&c), fake_channel_credentials())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let drain = i64::try_from(cfg.server.drain_deadline_secs).expect("small");
        assert_eq!(drain, 25, "{name}: drain deadline");
        let grace = pod_spec(&c)
            .termination_grace_period_seconds
            .expect("grace period");
        assert!(
            grace > sleep + drain,
            "{name}: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} + drain {drain}"
        );
        assert_eq!(
            cfg.server.listen,
            format!("0.0.0.0:{}", labels::HTTP_PORT),
            "{name}: listen"
        );
        // Metrics on their own port, so only the http port is ever public.
        assert_eq!(
            cfg.server.metrics_listen,
            Some(format!("0.0.0.0:{}", labels::METRICS_PORT)),
            "{name}: metrics_listen"
        );
        // The Service reaches the same named ports.
        let svc = c.service.spec.as_ref().expect("service spec");
        let sps = svc.ports.as_ref().expect("ports");
        assert_eq!(sps.len(), 2, "{name}");
        for (sp, (port, port_name)) in sps.iter().zip([
            (labels::HTTP_PORT, "http"),
            (labels::METRICS_PORT, "metrics"),
        ]) {
            assert_eq!(sp.port, port);
            assert_eq!(sp.name.as_deref(), Some(port_name));
            assert_eq!(
                sp.target_port,
                Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        port_name.into()
                    )
                )
            );
        }
        assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    }
}

#[test]
fn volumes_config_and_scratch() {
    for (name, cb, c) in all_cases() {
        let ctr = container(&c);
        let pod = pod_spec(&c);
        let mounts = ctr.volume_mounts.as_ref().expect("mounts");
        let volumes = pod.volumes.as_ref().expect("volumes");
        let volume = |v: &str| volumes.iter().find(|x| x.name == v).expect("volume exists");
        let mount_at = |path: &str| mounts.iter().find(|m| m.mount_path == path);
        let cfg: RuntimeConfig = serde_saphyr::from_str(config_yaml(&c)).expect("config parses");
        // Writable scratch: the runtime's data dir and /tmp, both emptyDir.
        for path in [cfg.server.data_dir.as_str(), "/var/lib/clawdbot", "/tmp"] {
            let m = mount_at(path).unwrap_or_else(|| panic!("{name}: nothing mounted at {path}"));
            assert_ne!(m.read_only, Some(true), "{name}: {path} writable");
            assert!(
                volume(&m.name).empty_dir.is_some(),
                "{name}: {path} is an emptyDir"
            );
        }
        // The config file the container is told to read is the ConfigMap's key.
        let args = ctr.args.as_ref().expect("args");
        assert_eq!(
            args[..2],
            ["serve".to_owned(), "--config".to_owned()],
            "{name}"
        );
        let cfg_mount = mount_at("/etc/clawdbot").expect("config mount");
        assert_eq!(cfg_mount.read_only, Some(true));
        let cm_vol = volume(&cfg_mount.name)
            .config_map
            .as_ref()
            .expect("configMap volume");
        assert_eq!(
            Some(&cm_vol.name),
            c.config_map.metadata.name.as_ref(),
            "{name}: mounts its ConfigMap"
        );
        let key = c
            .config_map
            .data
            .as_ref()
            .expect("data")
            .keys()
            .next()
            .expect("a key")
            .clone();
        assert_eq!(args[2], format!("/etc/clawdbot/{key}"), "{name}");
        // Knowledge, when asked for, read-only from the user's ConfigMap.
        match cb.spec.knowledge.as_ref().and_then(|k| k.name.as_deref()) {
            Some(cm) => {
                let m = mount_at("/etc/clawdbot/knowledge").expect("knowledge mount");
                assert_eq!(m.read_only, Some(true));
                assert_eq!(
                    volume(&m.name).config_map.as_ref().map(|v| v.name.as_str()),
                    Some(cm)
                );
            }
            None => assert!(mount_at("/etc/clawdbot/knowledge").is_none(), "{name}"),
        }
        // Nothing else: no hostPath, no Secret volumes.
        for v in volumes {
            assert!(
                v.host_path.is_none() && v.secret.is_none(),
                "{name}: volume {}",
                v.name
            );
        }
    }
}

#[test]
fn secrets_only_by_reference() {
    for (name, _, c) in all_cases() {
        let ctr = container(&c);
        for e in ctr.env.iter().flatten() {
            assert!(e.value.is_none(), "{name}: {} has a literal value", e.name);
            let r = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{name}: {} is not a secretKeyRef", e.name));
            assert_eq!(
                r.optional,
                Some(false),
                "{name}: a missing Secret must stop the pod"
            );
        }
        for e in ctr.env_from.iter().flatten() {
            assert!(e.config_map_ref.is_none(), "{name}");
            let s = e.secret_ref.as_ref().expect("secretRef");
            assert_eq!(s.optional, Some(false));
            let prefix = e.prefix.as_deref().expect("prefix");
            assert!(
                prefix.starts_with("CLAWDBOT_") && prefix.ends_with("__"),
                "{name}: {prefix}"
            );
        }
        // The rendered config carries no secret value.
        let cfg: RuntimeConfig = serde_saphyr::from_str(config_yaml(&c)).expect("config parses");
        assert!(cfg.model.api_key.is_none(), "{name}");
        assert!(cfg.auth.api_keys.is_empty(), "{name}");
        assert!(
            cfg.redis.url.is_none() && cfg.database.url.is_none(),
            "{name}"
        );
        assert!(
            cfg.model.fallbacks.iter().all(|f| f.api_key.is_none()),
            "{name}"
        );
        assert!(
            cfg.dingtalk.app_secret.is_none() && cfg.feishu.app_secret.is_none(),
            "{name}"
        );
        // And no value of a Secret shipped next to the ClawdBot shows up anywhere.
        let path = common::cases()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("case")
            .1;
        let text = golden_text(&name, &path, &c);
        for doc in common::other_documents(&path) {
            if doc["kind"] != "Secret" {
                continue;
            }
            for v in doc["stringData"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let v = v.as_str().expect("string");
                assert!(
                    !text.contains(v),
                    "{name}: the Secret value {v:?} leaked into the children"
                );
            }
        }
    }
}

#[test]
fn owner_references_and_labels() {
    for (name, cb, c) in all_cases() {
        let bot = cb.metadata.name.clone().expect("name");
        for (kind, meta) in metas(&c) {
            assert_eq!(
                meta.namespace, cb.metadata.namespace,
                "{name}: {kind} namespace"
            );
            let refs = meta.owner_references.as_ref().expect("owner references");
            assert_eq!(refs.len(), 1, "{name}: {kind}");
            let o = &refs[0];
            assert_eq!(
                (
                    o.api_version.as_str(),
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.uid.as_str()
                ),
                ("clawdbot.io/v1alpha1", "ClawdBot", bot.as_str(), UID),
                "{name}: {kind}"
            );
            assert_eq!(o.controller, Some(true), "{name}: {kind}");
            assert_ne!(o.block_owner_deletion, Some(false), "{name}: {kind}");
            let l = meta.labels.as_ref().expect("labels");
            assert_eq!(l, &labels::labels(&bot, "runtime"), "{name}: {kind} labels");
        }
        // Children's names.
        assert_eq!(c.config_map.metadata.name, Some(format!("{bot}-config")));
        for (kind, meta) in metas(&c) {
            if kind != "ConfigMap" {
                assert_eq!(
                    meta.name.as_deref(),
                    Some(bot.as_str()),
                    "{name}: {kind} name"
                );
            }
        }
        // Selectors: Deployment, Service, pods agree; user labels never override ours.
        let spec = c.deployment.spec.as_ref().expect("deployment spec");
        let sel = labels::selector(&bot);
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&sel), "{name}");
        assert_eq!(
            c.service.spec.as_ref().and_then(|s| s.selector.as_ref()),
            Some(&sel),
            "{name}"
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        for (k, v) in labels::labels(&bot, "runtime") {
            assert_eq!(pod_labels.get(&k), Some(&v), "{name}: pod label {k}");
        }
        if let Some(pt) = &cb.spec.pod_template {
            for (k, v) in &pt.labels {
                if !k.starts_with("app.kubernetes.io/") {
                    assert_eq!(pod_labels.get(k), Some(v), "{name}: user pod label {k}");
                }
            }
        }
        assert_eq!(
            labels::selector_string(&bot),
            format!(
                "app.kubernetes.io/component=runtime,app.kubernetes.io/instance={bot},app.kubernetes.io/name=clawdbot"
            )
        );
    }
}

#[test]
fn offline_renders_have_no_owner_references() {
    // `clawdbot-operator render` has no uid: an owner reference with an empty
    // uid would be refused by the API server, so there is none.
    let cb = common::load_clawdbot(&common::examples_dir().join("production.yaml"));
    assert!(cb.metadata.uid.is_none());
    for (kind, meta) in metas(&build(&cb)) {
        assert!(meta.owner_references.is_none(), "{kind}");
    }
}

#[test]
fn config_hash_annotation_is_present() {
    for (name, _, c) in all_cases() {
        let h = config_hash(&c);
        assert_eq!(h.len(), 32, "{name}: {h}");
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()), "{name}: {h}");
    }
}

#[test]
fn replicas_follow_spec_then_autoscaling_then_one() {
    for (name, cb, c) in all_cases() {
        let want = cb
            .spec
            .replicas
            .or_else(|| cb.spec.autoscaling.as_ref().and_then(|a| a.min_replicas))
            .unwrap_or(1);
        assert_eq!(
            c.deployment.spec.as_ref().and_then(|s| s.replicas),
            Some(want),
            "{name}"
        );
        assert_eq!(render::desired_replicas(&cb), want, "{name}");
    }
    let with = |replicas: Option<i32>, min: Option<i32>, auto: bool| {
        let mut cb = ClawdBot::new("r", Default::default());
        cb.spec.replicas = replicas;
        if auto {
            cb.spec.autoscaling = Some(crd::AutoscalingSpec {
                enabled: true,
                min_replicas: min,
                max_replicas: 9,
                target_cpu_utilization: None,
            });
        }
        build(&cb).deployment.spec.and_then(|s| s.replicas)
    };
    assert_eq!(with(None, None, false), Some(1));
    assert_eq!(with(Some(0), None, false), Some(0), "0 is kept");
    assert_eq!(
        with(Some(0), Some(3), true),
        Some(0),
        "spec.replicas wins over minReplicas"
    );
    assert_eq!(with(Some(5), Some(3), true), Some(5));
    assert_eq!(with(None, Some(3), true), Some(3));
    assert_eq!(
        with(None, None, true),
        Some(1),
        "autoscaling without minReplicas"
    );
}

#[test]
fn autoscaler_targets_the_clawdbot() {
    let mut seen = 0;
    for (name, cb, c) in all_cases() {
        match (&cb.spec.autoscaling, &c.autoscaler) {
            (None, None) => {}
            (Some(a), None) if !a.enabled => {}
            (Some(a), Some(hpa)) => {
                seen += 1;
                let spec = hpa.spec.as_ref().expect("hpa spec");
                let t = &spec.scale_target_ref;
                assert_eq!(
                    t.api_version.as_deref(),
                    Some("clawdbot.io/v1alpha1"),
                    "{name}"
                );
                assert_eq!(
                    t.kind, "ClawdBot",
                    "{name}: the HPA must not target the Deployment"
                );
                assert_eq!(Some(&t.name), cb.metadata.name.as_ref());
                assert_eq!(
                    spec.min_replicas,
                    Some(a.min_replicas.unwrap_or(1)),
                    "{name}"
                );
                assert_eq!(spec.max_replicas, a.max_replicas, "{name}");
                let m = &spec.metrics.as_ref().expect("metrics")[0];
                let r = m.resource.as_ref().expect("resource metric");
                assert_eq!((m.type_.as_str(), r.name.as_str()), ("Resource", "cpu"));
                assert_eq!(r.target.type_, "Utilization");
                assert_eq!(
                    r.target.average_utilization,
                    Some(a.target_cpu_utilization.unwrap_or(70))
                );
            }
            other => panic!(
                "{name}: autoscaling {:?} but HPA {:?}",
                other.0,
                other.1.is_some()
            ),
        }
    }
    assert!(seen >= 3, "examples and fixtures exercise autoscaling");
}

#[test]
fn optional_children_follow_the_spec() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    for (name, cb, c) in all_cases() {
        let s = &cb.spec;
        assert_eq!(
            c.disruption_budget.is_some(),
            s.disruption_budget.as_ref().is_some_and(|d| d.enabled),
            "{name}"
        );
        if let (Some(d), Some(pdb)) = (&s.disruption_budget, &c.disruption_budget) {
            let spec = pdb.spec.as_ref().expect("pdb spec");
            assert_eq!(
                spec.selector.as_ref().and_then(|l| l.match_labels.as_ref()),
                Some(&labels::selector(
                    cb.metadata.name.as_deref().expect("name")
                )),
                "{name}"
            );
            match d.min_available {
                Some(m) => {
                    assert_eq!(spec.min_available, Some(IntOrString::Int(m)));
                    assert_eq!(spec.max_unavailable, None);
                }
                None => {
                    assert_eq!(spec.min_available, None);
                    assert_eq!(
                        spec.max_unavailable,
                        Some(IntOrString::Int(d.max_unavailable.unwrap_or(1)))
                    );
                }
            }
        }
        let np_on = s.network_policy.as_ref().is_some_and(|n| n.enabled);
        assert_eq!(c.network_policy.is_some(), np_on, "{name}");
        if let Some(np) = &c.network_policy {
            let spec = np.spec.as_ref().expect("np spec");
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_owned()][..]),
                "{name}: egress open"
            );
            let rule = &spec.ingress.as_ref().expect("ingress rules")[0];
            let port = &rule.ports.as_ref().expect("ports")[0];
            assert_eq!(port.port, Some(IntOrString::Int(labels::HTTP_PORT)));
            let allowed = &s.network_policy.as_ref().expect("np").allowed_namespaces;
            let from = rule.from.as_ref().expect("from");
            assert_eq!(from.len(), 1 + usize::from(!allowed.is_empty()), "{name}");
            // /metrics: its own port, from the monitoring namespaces only.
            let monitoring = &s.network_policy.as_ref().expect("np").monitoring_namespaces;
            let rules = spec.ingress.as_ref().expect("ingress rules");
            assert_eq!(
                rules.len(),
                1 + usize::from(!monitoring.is_empty()),
                "{name}"
            );
            if let Some(m) = rules.get(1) {
                let ports = m.ports.as_ref().expect("ports");
                assert_eq!(ports.len(), 1, "{name}");
                assert_eq!(ports[0].port, Some(IntOrString::Int(labels::METRICS_PORT)));
                let from = m.from.as_ref().expect("from");
                assert_eq!(from.len(), 1, "{name}: only namespaces, no pod selector");
                let sel = from[0].namespace_selector.as_ref().expect("namespaces");
                let expr = &sel.match_expressions.as_ref().expect("expressions")[0];
                assert_eq!(expr.values.as_ref(), Some(monitoring), "{name}");
                assert!(from[0].pod_selector.is_none(), "{name}");
            }
        }
        let ing_on = s.ingress.as_ref().is_some_and(|i| i.enabled);
        assert_eq!(c.ingress.is_some(), ing_on, "{name}");
        if let (Some(i), Some(ing)) = (&s.ingress, &c.ingress) {
            let spec = ing.spec.as_ref().expect("ingress spec");
            let rule = &spec.rules.as_ref().expect("rules")[0];
            assert_eq!(rule.host, i.host, "{name}");
            let backend = rule.http.as_ref().expect("http").paths[0]
                .backend
                .service
                .as_ref()
                .expect("service");
            assert_eq!(Some(&backend.name), c.service.metadata.name.as_ref());
            assert_eq!(
                backend.port.as_ref().and_then(|p| p.name.as_deref()),
                Some("http")
            );
            match &i.tls_secret_name {
                Some(s) => {
                    let tls = &spec.tls.as_ref().expect("tls")[0];
                    assert_eq!(tls.secret_name.as_ref(), Some(s));
                    assert_eq!(
                        tls.hosts.as_ref(),
                        Some(&vec![i.host.clone().expect("host")])
                    );
                }
                None => assert!(spec.tls.is_none(), "{name}"),
            }
            assert_eq!(spec.ingress_class_name, i.class_name, "{name}");
        }
    }
}

#[test]
fn image_and_pull_settings() {
    for (name, cb, c) in all_cases() {
        let ctr = container(&c);
        let want = cb
            .spec
            .image
            .clone()
            .unwrap_or_else(|| crd::DEFAULT_IMAGE.to_owned());
        assert_eq!(ctr.image.as_ref(), Some(&want), "{name}");
        assert_eq!(
            ctr.image_pull_policy.as_deref(),
            cb.spec.image_pull_policy.map(|p| p.as_str()),
            "{name}"
        );
        let secrets = pod_spec(&c).image_pull_secrets.clone().unwrap_or_default();
        assert_eq!(secrets, cb.spec.image_pull_secrets, "{name}");
        let res = ctr.resources.as_ref().expect("resources");
        match &cb.spec.resources {
            Some(r) => assert_eq!(res, r, "{name}"),
            None => {
                assert!(
                    res.requests
                        .as_ref()
                        .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
                );
                assert!(
                    res.limits
                        .as_ref()
                        .is_some_and(|l| l.contains_key("memory"))
                );
            }
        }
    }
    let c = build(&common::load_clawdbot(
        &common::fixtures_dir().join("explicit-image.yaml"),
    ));
    assert_eq!(
        container(&c).image.as_deref(),
        Some("registry.example.com/clawdbot/bot-runtime:0.0.9")
    );
    assert_eq!(container(&c).image_pull_policy.as_deref(), Some("Always"));
    assert!(crd::DEFAULT_IMAGE.starts_with("clawdbot/bot-runtime:"));
}

// --- config hash -------------------------------------------------------------

fn hash_of(cb: &ClawdBot, digest: &str) -> String {
    let c = render::build(
        cb,
        &Inputs {
            secrets_digest: digest.into(),
            default_image: crd::DEFAULT_IMAGE.into(),
            ..Inputs::default()
        },
    )
    .expect("renders");
    config_hash(&c)
}

/// A named edit of a ClawdBot.
type Change = (&'static str, fn(&mut ClawdBot));

#[test]
fn config_hash_changes_with_config_or_secrets_only() {
    let base = common::load_clawdbot(&common::examples_dir().join("production.yaml"));
    let h = hash_of(&base, "");
    assert_eq!(h, hash_of(&base, ""), "deterministic");
    assert_ne!(
        h,
        hash_of(&base, "digest-1"),
        "a changed Secret rolls the pods"
    );
    assert_ne!(hash_of(&base, "digest-1"), hash_of(&base, "digest-2"));

    // Changes of the runtime config change the hash.
    let config_changes: Vec<Change> = vec![
        ("systemPrompt", |cb| {
            cb.spec.model.system_prompt = Some("Other.".into())
        }),
        ("model.name", |cb| {
            cb.spec.model.name = Some("gpt-other".into())
        }),
        ("model.endpoint", |cb| {
            cb.spec.model.endpoint = Some("https://other.example.com/v1".into())
        }),
        ("temperature", |cb| cb.spec.model.temperature = Some(1.5)),
        ("fallbacks", |cb| cb.spec.model.fallbacks.clear()),
        ("channel", |cb| {
            cb.spec.channels.dingtalk = Some(DingTalkChannel {
                enabled: false,
                mode: Some(crd::DingTalkMode::Stream),
                credentials_secret_ref: None,
            })
        }),
    ];
    for (what, change) in &config_changes {
        let mut cb = base.clone();
        change(&mut cb);
        assert_ne!(
            render::runtime_config(&cb),
            render::runtime_config(&base),
            "{what} changes the config"
        );
        assert_ne!(hash_of(&cb, ""), h, "{what} must change the config hash");
    }

    // Changes that do not touch the config file keep it (no needless rollout;
    // the Deployment changes roll the pods by themselves where needed).
    let other_changes: Vec<Change> = vec![
        ("replicas", |cb| cb.spec.replicas = Some(7)),
        ("resources", |cb| cb.spec.resources = None),
        ("image", |cb| cb.spec.image = Some("x/y:z".into())),
        ("autoscaling", |cb| cb.spec.autoscaling = None),
        ("ingress", |cb| cb.spec.ingress = None),
        ("podTemplate", |cb| cb.spec.pod_template = None),
        ("paused", |cb| cb.spec.paused = true),
        ("uid", |cb| cb.metadata.uid = Some(UID.into())),
        ("secret refs", |cb| {
            cb.spec.auth.api_keys_secret_ref = None;
            cb.spec.redis = None;
        }),
    ];
    for (what, change) in &other_changes {
        let mut cb = base.clone();
        change(&mut cb);
        assert_eq!(
            hash_of(&cb, ""),
            h,
            "{what} must not change the config hash"
        );
    }
}

fn secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[test]
fn secrets_digest_follows_content_not_order() {
    let a = secret(&[("api-key", "one")]);
    let b = secret(&[("url", "redis://r:6379/0")]);
    let d = render::secrets_digest([("a", &a), ("b", &b)]);
    assert_eq!(
        d,
        render::secrets_digest([("b", &b), ("a", &a)]),
        "order of Secrets"
    );
    let a2 = secret(&[("api-key", "two")]);
    assert_ne!(
        d,
        render::secrets_digest([("a", &a2), ("b", &b)]),
        "a changed value"
    );
    let a3 = secret(&[("api-key2", "one")]);
    assert_ne!(
        d,
        render::secrets_digest([("a", &a3), ("b", &b)]),
        "a renamed key"
    );
    assert_ne!(d, render::secrets_digest([("a", &a)]), "a Secret fewer");
}

// --- the config and environment the runtime reads -----------------------------

#[test]
fn config_map_loads_in_the_runtime() {
    for (name, cb, c) in all_cases() {
        let yaml = config_yaml(&c);
        let enabled_channels = [
            cb.spec
                .channels
                .dingtalk
                .as_ref()
                .is_some_and(|x| x.enabled),
            cb.spec.channels.feishu.as_ref().is_some_and(|x| x.enabled),
            cb.spec.channels.wecom.as_ref().is_some_and(|x| x.enabled),
            cb.spec.channels.slack.as_ref().is_some_and(|x| x.enabled),
        ];
        if enabled_channels.iter().any(|e| *e) {
            // The file alone lacks the channels' credentials (they come from
            // the Secrets as environment); with them the runtime loads it.
            let err =
                clawdbot_config::load(yaml, Vec::new()).expect_err("credentials are required");
            assert!(
                err.issues().iter().all(|i| i.why.contains("is required")),
                "{name}: {err}"
            );
            assert_eq!(validate::validate(&cb), Vec::new(), "{name}: validates");
            let loaded = clawdbot_config::load(yaml, fake_channel_credentials())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(clawdbot_config::validate(&loaded).is_empty());
            continue;
        }
        let loaded =
            clawdbot_config::load(yaml, Vec::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            loaded,
            render::runtime_config(&cb),
            "{name}: the file round-trips"
        );
        assert!(clawdbot_config::validate(&loaded).is_empty());
        assert_eq!(loaded.server.data_dir, "/var/lib/clawdbot");
        assert_eq!(loaded.logging.format, clawdbot_config::LogFormat::Json);
        assert_eq!(validate::validate(&cb), Vec::new(), "{name}: validates");
    }
}

/// What channel Secrets would put in the environment: every credential an
/// enabled channel may require, for each platform.
fn fake_channel_credentials() -> Vec<(String, String)> {
    [
        ("CLAWDBOT_DINGTALK__app_key", "ding-key"),
        ("CLAWDBOT_DINGTALK__app_secret", "ding-secret"),
        ("CLAWDBOT_FEISHU__app_id", "cli_x"),
        ("CLAWDBOT_FEISHU__app_secret", "feishu-secret"),
        ("CLAWDBOT_FEISHU__verification_token", "feishu-token"),
        ("CLAWDBOT_WECOM__corp_id", "ww1"),
        ("CLAWDBOT_WECOM__agent_id", "1000002"),
        ("CLAWDBOT_WECOM__secret", "wecom-secret"),
        ("CLAWDBOT_WECOM__token", "wecom-token"),
        (
            "CLAWDBOT_WECOM__encoding_aes_key",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
        ),
        ("CLAWDBOT_SLACK__signing_secret", "slack-secret"),
        ("CLAWDBOT_SLACK__bot_token", "xoxb-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn env_names(c: &Children) -> Vec<String> {
    container(c)
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect()
}

fn secret_key_of(c: &Children, env: &str) -> (String, String) {
    let e = container(c)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == env)
        .expect("env var");
    let r = e
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    (r.name.clone(), r.key.clone())
}

/// A plausible value for each variable the operator sets.
fn fake_value(var: &str) -> String {
    match var {
        "CLAWDBOT_API_KEYS" => "key-admin-123456:admin,key-user-1234567".into(),
        "REDIS_URL" => "redis://:pw@redis.redis.svc:6379/0".into(),
        "DATABASE_URL" => "postgres://u:pw@db.databases.svc:5432/clawdbot".into(),
        ENCRYPTION_KEYS => "k2026:aes-256-gcm:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
        other => format!("value-of-{other}"),
    }
}

/// The one generic `CLAWDBOT_<PATH>` name the operator sets (the issue's
/// and the docs' name for the keyring), beside the documented aliases.
const ENCRYPTION_KEYS: &str = "CLAWDBOT_ENCRYPTION__KEYS";

#[test]
fn env_names_are_runtime_config_keys() {
    let aliases: BTreeMap<&str, &str> = ENV_ALIASES.iter().copied().collect();
    let prod = build(&common::load_clawdbot(
        &common::examples_dir().join("production.yaml"),
    ));
    let names = env_names(&prod);
    for want in [
        "MODEL_API_KEY",
        "CLAWDBOT_API_KEYS",
        "REDIS_URL",
        "DATABASE_URL",
    ] {
        assert!(
            names.contains(&want.to_owned()),
            "production sets {want}: {names:?}"
        );
    }
    assert_eq!(aliases["MODEL_API_KEY"], "model.api_key");
    assert_eq!(aliases["CLAWDBOT_API_KEYS"], "auth.api_keys");
    assert_eq!(aliases["REDIS_URL"], "redis.url");
    assert_eq!(aliases["DATABASE_URL"], "database.url");
    assert_eq!(
        secret_key_of(&prod, "MODEL_API_KEY"),
        ("support-bot-credentials".into(), "model-api-key".into())
    );
    assert_eq!(
        secret_key_of(&prod, "CLAWDBOT_API_KEYS"),
        ("support-bot-api-keys".into(), "api-keys".into())
    );
    // Managed Redis and PostgreSQL: from the Secret the operator maintains.
    assert_eq!(
        secret_key_of(&prod, "REDIS_URL"),
        ("support-bot-connections".into(), "redis-url".into())
    );
    assert_eq!(
        secret_key_of(&prod, "DATABASE_URL"),
        ("support-bot-connections".into(), "database-url".into())
    );
    // External ones: from the user's Secret.
    let ext = build(&common::load_clawdbot(
        &common::examples_dir().join("production-external.yaml"),
    ));
    assert_eq!(
        secret_key_of(&ext, "REDIS_URL"),
        ("support-bot-credentials".into(), "redis-url".into())
    );
    assert_eq!(
        secret_key_of(&ext, "DATABASE_URL"),
        ("support-bot-credentials".into(), "database-url".into())
    );

    // The generated key Secret when auth names none.
    let minimal = build(&common::load_clawdbot(
        &common::examples_dir().join("minimal.yaml"),
    ));
    assert_eq!(env_names(&minimal), ["CLAWDBOT_API_KEYS"]);
    assert_eq!(
        secret_key_of(&minimal, "CLAWDBOT_API_KEYS"),
        ("hello-api-keys".into(), "api-keys".into())
    );

    // Every variable of every case is either a documented alias or the
    // api_key_env of a fallback in the rendered config, and the runtime
    // loads the ConfigMap with that environment, putting each value where it belongs.
    for (name, cb, c) in all_cases() {
        let ch = &cb.spec.channels;
        if ch.dingtalk.as_ref().is_some_and(|x| x.enabled)
            || ch.feishu.as_ref().is_some_and(|x| x.enabled)
            || ch.wecom.as_ref().is_some_and(|x| x.enabled)
            || ch.slack.as_ref().is_some_and(|x| x.enabled)
        {
            continue; // channel Secrets: covered by channel_secrets_map_to_runtime_keys
        }
        let cfg_file: RuntimeConfig = serde_saphyr::from_str(config_yaml(&c)).expect("parses");
        let fallback_vars: Vec<String> = cfg_file
            .model
            .fallbacks
            .iter()
            .filter_map(|f| f.api_key_env.clone())
            .collect();
        let env: Vec<(String, String)> = env_names(&c)
            .into_iter()
            .map(|n| (n.clone(), fake_value(&n)))
            .collect();
        for (var, _) in &env {
            assert!(
                aliases.contains_key(var.as_str())
                    || fallback_vars.contains(var)
                    || var == ENCRYPTION_KEYS,
                "{name}: {var} is neither a runtime env alias nor a fallback's api_key_env"
            );
            assert!(
                !var.starts_with("CLAWDBOT_")
                    || var == "CLAWDBOT_API_KEYS"
                    || var == ENCRYPTION_KEYS,
                "{name}: {var}"
            );
        }
        for v in &fallback_vars {
            assert!(
                env.iter().any(|(n, _)| n == v),
                "{name}: {v} named in the config but not set"
            );
        }
        let cfg = clawdbot_config::load(config_yaml(&c), env.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let get = |var: &str| env.iter().find(|(n, _)| n == var).map(|(_, v)| v.clone());
        assert_eq!(
            cfg.model.api_key.as_ref().map(|k| k.expose().to_owned()),
            get("MODEL_API_KEY"),
            "{name}"
        );
        assert_eq!(
            cfg.redis.url.as_ref().map(|k| k.expose().to_owned()),
            get("REDIS_URL"),
            "{name}"
        );
        assert_eq!(
            cfg.database.url.as_ref().map(|k| k.expose().to_owned()),
            get("DATABASE_URL"),
            "{name}"
        );
        assert_eq!(
            cfg.auth.api_keys.len(),
            2,
            "{name}: CLAWDBOT_API_KEYS parsed"
        );
        assert_eq!(cfg.auth.api_keys[0].scope, clawdbot_config::Scope::Admin);
        assert_eq!(
            cfg.encryption.keys.as_ref().map(|k| k.expose().to_owned()),
            get(ENCRYPTION_KEYS),
            "{name}"
        );
        assert_eq!(
            cfg.encryption.enabled,
            get(ENCRYPTION_KEYS).is_some(),
            "{name}"
        );
    }
}

#[test]
fn fallback_keys_are_numbered_by_position() {
    let cb = common::load_clawdbot(&common::fixtures_dir().join("fallback-keys.yaml"));
    let c = build(&cb);
    assert_eq!(
        env_names(&c),
        [
            "MODEL_API_KEY",
            "MODEL_FALLBACK_1_API_KEY",
            "MODEL_FALLBACK_3_API_KEY",
            "CLAWDBOT_API_KEYS"
        ]
    );
    assert_eq!(
        secret_key_of(&c, "MODEL_API_KEY"),
        ("primary-key".into(), "token".into())
    );
    assert_eq!(
        secret_key_of(&c, "MODEL_FALLBACK_1_API_KEY"),
        ("backup-keys".into(), "a".into())
    );
    assert_eq!(
        secret_key_of(&c, "MODEL_FALLBACK_3_API_KEY"),
        ("backup-keys".into(), "c".into())
    );
    let cfg = clawdbot_config::load(config_yaml(&c), Vec::new()).expect("loads");
    let envs: Vec<Option<&str>> = cfg
        .model
        .fallbacks
        .iter()
        .map(|f| f.api_key_env.as_deref())
        .collect();
    assert_eq!(
        envs,
        [
            Some("MODEL_FALLBACK_1_API_KEY"),
            None,
            Some("MODEL_FALLBACK_3_API_KEY")
        ]
    );
    assert_eq!(cfg.model.fallbacks[0].name.as_deref(), Some("model-a"));
    assert_eq!(
        cfg.model.fallbacks[1].name, None,
        "defaults to model.name in the runtime"
    );
    assert_eq!(cfg.model.temperature, Some(0.0));
    assert_eq!(cfg.model.max_tokens, Some(1));
    assert_eq!(
        cfg.model.effective_backend(),
        clawdbot_config::ModelBackend::Openai
    );
    assert_eq!(
        render::referenced_secrets(&cb),
        ["backup-keys", "fallback-bot-api-keys", "primary-key"],
        "sorted, deduplicated"
    );
}

#[test]
fn local_model_and_knowledge_reach_the_runtime() {
    let cases = all_cases();
    let find = |name: &str| cases.iter().find(|(n, ..)| n == name).expect("fixture");
    let (_, _, c) = find("local-model");
    let cfg: RuntimeConfig = serde_saphyr::from_str(config_yaml(c)).expect("config parses");
    assert_eq!(
        cfg.model.effective_backend(),
        clawdbot_config::ModelBackend::Local
    );
    assert_eq!(
        cfg.model.local.path,
        "/var/lib/clawdbot/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"
    );
    assert_eq!(
        (cfg.model.local.context_size, cfg.model.local.parallel),
        (4096, 2)
    );
    assert_eq!(
        cfg.knowledge.path.as_deref(),
        Some("/var/lib/clawdbot/knowledge")
    );
    let res = container(c).resources.as_ref().expect("resources");
    let mem =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.as_ref()
                .and_then(|m| m.get("memory"))
                .map(|q| q.0.clone())
        };
    assert_eq!(
        (mem(&res.requests).as_deref(), mem(&res.limits).as_deref()),
        (Some("384Mi"), Some("512Mi"))
    );
    let mounts = container(c).volume_mounts.as_ref().expect("mounts");
    for path in ["/var/lib/clawdbot/models", "/var/lib/clawdbot/knowledge"] {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path}"));
        assert_eq!(m.read_only, Some(true), "{path}");
    }

    // A ConfigMap knowledge base is read where it is mounted; no local
    // model: explicit `none`, the small default memory.
    let (_, _, c) = find("knowledge");
    let cfg: RuntimeConfig = serde_saphyr::from_str(config_yaml(c)).expect("config parses");
    assert_eq!(
        cfg.knowledge.path.as_deref(),
        Some("/etc/clawdbot/knowledge")
    );
    assert_eq!(cfg.model.backend, Some(clawdbot_config::ModelBackend::None));
    let res = container(c).resources.as_ref().expect("resources");
    assert_eq!(mem(&res.limits).as_deref(), Some("256Mi"));

    // The image's own model when no file is named.
    let mut cb = find("knowledge").1.clone();
    cb.spec.model.backend = Some(crd::ModelBackend::Local);
    let cfg: RuntimeConfig =
        serde_saphyr::from_str(config_yaml(&build(&cb))).expect("config parses");
    assert_eq!(cfg.model.local.path, crd::IMAGE_MODEL_PATH);
}

/// `Credentials Secret keys: a, b, c.` from a channel's CRD description.
fn documented_keys(crd_spec: &Value, channel: &str) -> Vec<String> {
    let desc = crd_spec["properties"]["channels"]["properties"][channel]["description"]
        .as_str()
        .expect("description");
    let list = desc
        .split("Credentials Secret keys:")
        .nth(1)
        .expect("lists the keys");
    list.trim()
        .trim_end_matches('.')
        .split(',')
        .map(|k| k.trim().to_owned())
        .collect()
}

/// WeCom's documented sample EncodingAESKey (43 characters).
const SAMPLE_AES_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

/// A value of the right shape for a channel's Secret key, naming both.
fn fake_secret_value(channel: &str, key: &str) -> String {
    if key == "encoding_aes_key" {
        SAMPLE_AES_KEY.to_owned()
    } else if key.ends_with("url") {
        format!("https://{channel}.example/{key}")
    } else {
        format!("{channel}-{key}-value")
    }
}

/// The keys of a channel's runtime section whose schema is a `Secret`.
fn secret_typed_keys(defs: &serde_json::Value, channel: &str) -> BTreeSet<String> {
    let def = defs
        .as_object()
        .expect("$defs")
        .iter()
        .find(|(name, _)| name.to_lowercase() == format!("{channel}config"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no $defs entry for {channel}"));
    def["properties"]
        .as_object()
        .expect("properties")
        .iter()
        .filter(|(_, schema)| schema.to_string().contains("#/$defs/Secret"))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn channel_secrets_map_to_runtime_keys() {
    let example = common::examples_dir().join("channels.yaml");
    let cb = common::load_clawdbot(&example);
    // Switched off: nothing is imported, and the runtime accepts the file alone.
    let mut disabled = cb.clone();
    disabled
        .spec
        .channels
        .dingtalk
        .as_mut()
        .expect("dingtalk")
        .enabled = false;
    disabled
        .spec
        .channels
        .feishu
        .as_mut()
        .expect("feishu")
        .enabled = false;
    let off = build(&disabled);
    assert!(container(&off).env_from.is_none());
    let cfg = clawdbot_config::load(config_yaml(&off), Vec::new()).expect("loads");
    assert_eq!(cfg.dingtalk.mode, clawdbot_config::DingTalkMode::Stream);
    assert_eq!(cfg.feishu.mode, clawdbot_config::FeishuMode::Websocket);
    assert_eq!(cfg.feishu.api_base, "https://open.feishu.cn");

    // Switched on: each channel's Secret is imported whole, with its prefix.
    let mut on = cb.clone();
    let ch = &mut on.spec.channels;
    ch.dingtalk.as_mut().expect("dingtalk").enabled = true;
    ch.feishu.as_mut().expect("feishu").enabled = true;
    ch.wecom = Some(BasicChannel {
        enabled: true,
        credentials_secret_ref: Some(SecretRef {
            name: "wecom-credentials".into(),
        }),
    });
    ch.slack = Some(BasicChannel {
        enabled: true,
        credentials_secret_ref: Some(SecretRef {
            name: "slack-credentials".into(),
        }),
    });
    let on_children = build(&on);
    let imports: BTreeMap<String, String> = container(&on_children)
        .env_from
        .iter()
        .flatten()
        .map(|e| {
            (
                e.prefix.clone().expect("prefix"),
                e.secret_ref.as_ref().expect("secretRef").name.clone(),
            )
        })
        .collect();
    assert_eq!(
        imports,
        BTreeMap::from([
            (
                "CLAWDBOT_DINGTALK__".to_owned(),
                "dingtalk-credentials".to_owned()
            ),
            (
                "CLAWDBOT_FEISHU__".to_owned(),
                "feishu-credentials".to_owned()
            ),
            (
                "CLAWDBOT_WECOM__".to_owned(),
                "wecom-credentials".to_owned()
            ),
            (
                "CLAWDBOT_SLACK__".to_owned(),
                "slack-credentials".to_owned()
            ),
        ])
    );
    let mut refs = render::referenced_secrets(&on);
    refs.retain(|s| s.ends_with("-credentials"));
    assert_eq!(
        refs.len(),
        4,
        "channel Secrets are watched for the hash: {refs:?}"
    );

    // The leaf keys: the example's Secrets, and those the CRD documents for
    // every channel, must be the runtime's keys (everything of the channel's
    // section but enabled, mode, api_base).
    let crd = serde_json::to_value(ClawdBot::crd()).expect("CRD JSON");
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let runtime_schema = clawdbot_config::schema();
    let mut secret_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in common::other_documents(&example) {
        let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
        let keys = doc["stringData"]
            .as_object()
            .expect("stringData")
            .keys()
            .cloned()
            .collect();
        secret_keys.insert(name, keys);
    }
    assert_eq!(
        secret_keys["dingtalk-credentials"],
        ["app_key", "app_secret", "robot_code"]
    );
    assert_eq!(
        secret_keys["feishu-credentials"],
        ["app_id", "app_secret", "encrypt_key", "verification_token"],
        "(sorted)"
    );
    let mut env = Vec::new();
    for (channel, prefix, secret) in [
        ("dingtalk", "CLAWDBOT_DINGTALK__", "dingtalk-credentials"),
        ("feishu", "CLAWDBOT_FEISHU__", "feishu-credentials"),
        ("wecom", "CLAWDBOT_WECOM__", "wecom-credentials"),
        ("slack", "CLAWDBOT_SLACK__", "slack-credentials"),
    ] {
        let documented = documented_keys(spec_schema, channel);
        let props = runtime_props(&runtime_schema, channel);
        let leaves: BTreeSet<String> = props
            .into_iter()
            .filter(|k| !["enabled", "mode", "api_base"].contains(&k.as_str()))
            .collect();
        let documented_set: BTreeSet<String> = documented.iter().cloned().collect();
        assert!(
            documented_set.is_subset(&leaves),
            "{channel}: the CRD documents keys the runtime lacks: {documented_set:?} vs {leaves:?}"
        );
        // Every credential of the runtime's section is documented.
        let section = &runtime_schema["$defs"];
        let secrets = secret_typed_keys(section, channel);
        assert!(!secrets.is_empty(), "{channel}");
        assert!(
            secrets.is_subset(&documented_set),
            "{channel}: undocumented credentials {:?}",
            secrets.difference(&documented_set).collect::<Vec<_>>()
        );
        for k in secret_keys.get(secret).cloned().unwrap_or(documented) {
            assert!(
                leaves.contains(&k),
                "{secret}: {k} is not a {channel} key of the runtime"
            );
            // Kubernetes names the variable prefix + Secret key, verbatim.
            env.push((format!("{prefix}{k}"), fake_secret_value(channel, &k)));
        }
    }
    // The runtime, every channel enabled, accepts exactly those variables
    // and puts each value in its key.
    let cfg = clawdbot_config::load(config_yaml(&on_children), env.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.dingtalk.app_key.as_deref(),
        Some("dingtalk-app_key-value")
    );
    assert_eq!(
        cfg.dingtalk.app_secret.as_ref().map(|s| s.expose()),
        Some("dingtalk-app_secret-value")
    );
    assert_eq!(
        cfg.dingtalk.robot_code.as_deref(),
        Some("dingtalk-robot_code-value")
    );
    assert_eq!(cfg.feishu.app_id.as_deref(), Some("feishu-app_id-value"));
    assert_eq!(
        cfg.feishu.app_secret.as_ref().map(|s| s.expose()),
        Some("feishu-app_secret-value")
    );
    assert_eq!(
        cfg.feishu.verification_token.as_ref().map(|s| s.expose()),
        Some("feishu-verification_token-value")
    );
    assert_eq!(
        cfg.feishu.encrypt_key.as_ref().map(|s| s.expose()),
        Some("feishu-encrypt_key-value")
    );
    assert_eq!(cfg.wecom.corp_id.as_deref(), Some("wecom-corp_id-value"));
    assert_eq!(
        cfg.wecom.encoding_aes_key.as_ref().map(|s| s.expose()),
        Some(SAMPLE_AES_KEY)
    );
    assert_eq!(
        cfg.slack.bot_token.as_ref().map(|s| s.expose()),
        Some("slack-bot_token-value")
    );
    assert!(cfg.dingtalk.enabled && cfg.feishu.enabled && cfg.wecom.enabled && cfg.slack.enabled);

    // A key that is not the runtime's stops it, naming the variable.
    let mut typo = env.clone();
    typo.push(("CLAWDBOT_DINGTALK__appkey".into(), "x".into()));
    let err = clawdbot_config::load(config_yaml(&off), typo).expect_err("unknown key");
    assert!(
        err.to_string().contains("CLAWDBOT_DINGTALK__appkey"),
        "{err}"
    );

    // A Secret without a required credential stops the runtime naming it.
    let missing: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k != "CLAWDBOT_SLACK__bot_token")
        .collect();
    let err = clawdbot_config::load(config_yaml(&on_children), missing).expect_err("missing");
    let keys: BTreeSet<String> = err.issues().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["slack.bot_token"].map(String::from).into());
}

fn runtime_props(schema: &Value, section: &str) -> Vec<String> {
    let node = &schema["properties"][section];
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(r) => &schema["$defs"][r.rsplit('/').next().expect("ref name")],
        None => node,
    };
    node["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn channels_modes_and_lark() {
    let cb = common::load_clawdbot(&common::fixtures_dir().join("channels-enabled.yaml"));
    let cfg = render::runtime_config(&cb);
    assert!(cfg.dingtalk.enabled && cfg.feishu.enabled && cfg.wecom.enabled && !cfg.slack.enabled);
    assert_eq!(
        cfg.dingtalk.mode,
        clawdbot_config::DingTalkMode::Http,
        "default http"
    );
    assert_eq!(cfg.feishu.mode, clawdbot_config::FeishuMode::Websocket);
    assert_eq!(cfg.feishu.api_base, "https://open.larksuite.com");
    let c = build(&cb);
    let prefixes: Vec<&str> = container(&c)
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.prefix.as_deref())
        .collect();
    assert_eq!(
        prefixes,
        [
            "CLAWDBOT_DINGTALK__",
            "CLAWDBOT_FEISHU__",
            "CLAWDBOT_WECOM__"
        ],
        "disabled slack not imported"
    );
}

#[test]
fn a_block_without_enabled_renders_nothing() {
    let cb: ClawdBot = common::parse_clawdbot(&serde_json::json!({
        "apiVersion": "clawdbot.io/v1alpha1", "kind": "ClawdBot",
        "metadata": {"name": "quiet", "namespace": "default"},
        "spec": {
            "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
            "disruptionBudget": {"minAvailable": 1},
            "networkPolicy": {"allowedNamespaces": ["ingress-nginx"]},
            "ingress": {"host": "quiet.example.com"},
        }
    }));
    let c = build(&cb);
    assert!(c.autoscaler.is_none());
    assert!(c.disruption_budget.is_none());
    assert!(c.network_policy.is_none());
    assert!(c.ingress.is_none());
    // Nor does the autoscaler's minimum set the Deployment's replicas.
    assert_eq!(c.deployment.spec.unwrap().replicas, Some(1));
}
