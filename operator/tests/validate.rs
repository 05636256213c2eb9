//! `validate::parse`, `validate::validate` and `status::next_status`: every
//! validation rule with a valid and an invalid case (the error naming the
//! field), reading badly typed specs, and the conditions the status carries.

mod common;

use clawdbot_operator::crd::{
    AutoscalingSpec, BasicChannel, ClawdBot, ClawdBotSpec, ClawdBotStatus, DatabaseSpec,
    DingTalkChannel, DisruptionBudgetSpec, FeishuChannel, IngressSpec, ModelBackend,
    ModelFallbackSpec, MonitoringSpec, RedisSpec, SecretKeyRef, SecretRef,
};
use clawdbot_operator::status::{Health, Observation, next_status};
use clawdbot_operator::validate::{self, FieldError};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DynamicObject;
use serde_json::{Value, json};

fn bot(spec: ClawdBotSpec) -> ClawdBot {
    let mut cb = ClawdBot::new("bot", spec);
    cb.metadata.namespace = Some("default".into());
    cb
}

fn fields(cb: &ClawdBot) -> Vec<String> {
    validate::validate(cb)
        .into_iter()
        .map(|e| e.field)
        .collect()
}

/// The spec passes validation.
#[track_caller]
fn ok(spec: ClawdBotSpec) {
    let errors = validate::validate(&bot(spec));
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
}

/// The spec fails validation with an error naming `field` (and the message
/// containing `needle`).
#[track_caller]
fn bad(spec: ClawdBotSpec, field: &str, needle: &str) -> Vec<FieldError> {
    let errors = validate::validate(&bot(spec));
    let e = errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error on {field}: {errors:?}"));
    assert!(
        e.message.contains(needle),
        "{field}: message {:?} lacks {needle:?}",
        e.message
    );
    assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
    errors
}

fn with(f: impl FnOnce(&mut ClawdBotSpec)) -> ClawdBotSpec {
    let mut s = ClawdBotSpec::default();
    f(&mut s);
    s
}

fn key(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

fn secret(name: &str) -> Option<SecretRef> {
    Some(SecretRef { name: name.into() })
}

// --- validate::validate ---------------------------------------------------------

#[test]
fn every_example_and_fixture_validates() {
    for (name, path) in common::cases() {
        let cb = common::load_clawdbot(&path);
        let errors = validate::validate(&cb);
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn metadata_name_is_a_dns_label() {
    for good in ["bot", "bot-1", "a", &"a".repeat(63)] {
        let mut cb = bot(ClawdBotSpec::default());
        cb.metadata.name = Some(good.to_owned());
        assert_eq!(fields(&cb), Vec::<String>::new(), "{good}");
    }
    for badname in [
        "Bot",
        "1bot",
        "bot-",
        "-bot",
        "bot.one",
        "bot_one",
        &"a".repeat(64),
    ] {
        let mut cb = bot(ClawdBotSpec::default());
        cb.metadata.name = Some(badname.to_owned());
        let errors = validate::validate(&cb);
        assert_eq!(errors.len(), 1, "{badname}: {errors:?}");
        assert_eq!(errors[0].field, "metadata.name", "{badname}");
        assert!(
            errors[0].message.contains("DNS label"),
            "{}",
            errors[0].message
        );
    }
}

#[test]
fn replicas_range() {
    for r in [0, 1, 1000] {
        ok(with(|s| s.replicas = Some(r)));
    }
    for r in [-1, 1001] {
        bad(
            with(|s| s.replicas = Some(r)),
            "spec.replicas",
            "outside 0..=1000",
        );
    }
}

#[test]
fn openai_backend_needs_an_endpoint() {
    ok(with(|s| {
        s.model.backend = Some(ModelBackend::Openai);
        s.model.endpoint = Some("http://vllm:8000/v1".into());
    }));
    ok(with(|s| s.model.backend = Some(ModelBackend::None)));
    let errors = bad(
        with(|s| s.model.backend = Some(ModelBackend::Openai)),
        "spec.model.endpoint",
        "required",
    );
    // The operator's and the runtime's rule say the same thing once.
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn api_key_needs_an_endpoint() {
    ok(with(|s| {
        s.model.endpoint = Some("https://api.example.com/v1".into());
        s.model.api_key_secret_ref = Some(key("k", "api-key"));
    }));
    bad(
        with(|s| s.model.api_key_secret_ref = Some(key("k", "api-key"))),
        "spec.model.apiKeySecretRef",
        "endpoint",
    );
}

#[test]
fn endpoints_are_http_urls() {
    for good in [
        "http://a",
        "https://api.openai.com/v1",
        "http://10.0.0.1:8000/v1",
    ] {
        ok(with(|s| s.model.endpoint = Some(good.into())));
        ok(with(|s| {
            s.model.endpoint = Some("http://primary/v1".into());
            s.model.fallbacks = vec![ModelFallbackSpec {
                endpoint: good.into(),
                ..ModelFallbackSpec::default()
            }];
        }));
    }
    for badurl in [
        "ftp://x",
        "api.openai.com/v1",
        "http://",
        "https:///v1",
        "http://a b/v1",
        "",
    ] {
        bad(
            with(|s| s.model.endpoint = Some(badurl.into())),
            "spec.model.endpoint",
            "http",
        );
        bad(
            with(|s| {
                s.model.endpoint = Some("http://primary/v1".into());
                s.model.fallbacks = vec![
                    ModelFallbackSpec {
                        endpoint: "http://ok/v1".into(),
                        ..ModelFallbackSpec::default()
                    },
                    ModelFallbackSpec {
                        endpoint: badurl.into(),
                        ..ModelFallbackSpec::default()
                    },
                ];
            }),
            "spec.model.fallbacks[1].endpoint",
            "http",
        );
    }
}

fn fallbacks(n: usize) -> ClawdBotSpec {
    with(|s| {
        s.model.endpoint = Some("http://primary/v1".into());
        s.model.fallbacks = (0..n)
            .map(|i| ModelFallbackSpec {
                endpoint: format!("http://fallback-{i}/v1"),
                name: None,
                api_key_secret_ref: Some(key("keys", &format!("k{i}"))),
            })
            .collect();
    })
}

#[test]
fn at_most_eight_fallbacks() {
    ok(fallbacks(8));
    bad(fallbacks(9), "spec.model.fallbacks", "at most 8");
}

#[test]
fn runtime_rules_name_spec_fields() {
    ok(with(|s| {
        s.model.temperature = Some(2.0);
        s.model.max_tokens = Some(1);
        s.model.name = Some("m".into());
    }));
    bad(
        with(|s| s.model.temperature = Some(2.5)),
        "spec.model.temperature",
        "outside",
    );
    bad(
        with(|s| s.model.temperature = Some(-0.1)),
        "spec.model.temperature",
        "outside",
    );
    bad(
        with(|s| s.model.max_tokens = Some(0)),
        "spec.model.maxTokens",
        "at least 1",
    );
    bad(
        with(|s| s.model.name = Some("  ".into())),
        "spec.model.name",
        "empty",
    );
}

fn channels(enabled: bool, with_secret: bool) -> Vec<(&'static str, ClawdBotSpec)> {
    let r = || if with_secret { secret("creds") } else { None };
    vec![
        (
            "dingtalk",
            with(|s| {
                s.channels.dingtalk = Some(DingTalkChannel {
                    enabled,
                    mode: None,
                    credentials_secret_ref: r(),
                })
            }),
        ),
        (
            "feishu",
            with(|s| {
                s.channels.feishu = Some(FeishuChannel {
                    enabled,
                    mode: None,
                    credentials_secret_ref: r(),
                    lark: false,
                })
            }),
        ),
        (
            "wecom",
            with(|s| {
                s.channels.wecom = Some(BasicChannel {
                    enabled,
                    credentials_secret_ref: r(),
                })
            }),
        ),
        (
            "slack",
            with(|s| {
                s.channels.slack = Some(BasicChannel {
                    enabled,
                    credentials_secret_ref: r(),
                })
            }),
        ),
    ]
}

#[test]
fn enabled_channels_need_credentials() {
    for (_, spec) in channels(false, false)
        .into_iter()
        .chain(channels(false, true))
    {
        ok(spec);
    }
    for (ch, spec) in channels(true, false) {
        bad(
            spec,
            &format!("spec.channels.{ch}.credentialsSecretRef"),
            "needs credentialsSecretRef",
        );
    }
}

#[test]
fn enabled_channels_with_a_credentials_secret_are_valid() {
    // The credentials arrive from the Secret at run time, so the rendered
    // config's missing app secrets and tokens are not errors here.
    for (ch, spec) in channels(true, true) {
        let errors = validate::validate(&bot(spec));
        assert!(errors.is_empty(), "{ch}: {errors:?}");
    }
}

fn autoscaling(min: Option<i32>, max: i32) -> ClawdBotSpec {
    with(|s| {
        s.autoscaling = Some(AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization: None,
        })
    })
}

#[test]
fn autoscaling_bounds() {
    ok(autoscaling(None, 1));
    ok(autoscaling(Some(3), 3));
    ok(autoscaling(Some(1), 10));
    bad(
        autoscaling(Some(4), 3),
        "spec.autoscaling.minReplicas",
        "must not exceed maxReplicas",
    );
    bad(
        autoscaling(None, 0),
        "spec.autoscaling.maxReplicas",
        "at least 1",
    );
}

fn budget(min: Option<i32>, max: Option<i32>) -> ClawdBotSpec {
    with(|s| {
        s.disruption_budget = Some(DisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
        })
    })
}

#[test]
fn disruption_budget_one_of() {
    ok(budget(None, None));
    ok(budget(Some(1), None));
    ok(budget(None, Some(1)));
    bad(
        budget(Some(1), Some(1)),
        "spec.disruptionBudget",
        "not both",
    );
}

fn ingress(enabled: bool, host: Option<&str>) -> ClawdBotSpec {
    with(|s| {
        s.ingress = Some(IngressSpec {
            enabled,
            host: host.map(Into::into),
            ..IngressSpec::default()
        })
    })
}

#[test]
fn ingress_host() {
    ok(ingress(true, Some("bot.example.com")));
    ok(ingress(true, Some("localhost")));
    ok(ingress(false, None));
    // A disabled ingress is not checked.
    ok(ingress(false, Some("Not A Host")));
    bad(ingress(true, None), "spec.ingress.host", "needs a host");
    for h in [
        "Bot.example.com",
        "bot..example.com",
        "-bot.example.com",
        "bot.example.com.",
        "a b",
    ] {
        bad(
            ingress(true, Some(h)),
            "spec.ingress.host",
            "not a DNS name",
        );
    }
}

#[test]
fn monitoring_is_not_reconciled_yet() {
    ok(with(|s| {
        s.monitoring = Some(MonitoringSpec {
            enabled: false,
            ..MonitoringSpec::default()
        })
    }));
    bad(
        with(|s| {
            s.monitoring = Some(MonitoringSpec {
                enabled: true,
                ..MonitoringSpec::default()
            })
        }),
        "spec.monitoring.enabled",
        "not reconciled",
    );
}

#[test]
fn all_problems_at_once() {
    let mut cb = bot(with(|s| {
        s.replicas = Some(-1);
        s.model.api_key_secret_ref = Some(key("k", "v"));
        s.autoscaling = Some(AutoscalingSpec {
            min_replicas: Some(5),
            max_replicas: 2,
            target_cpu_utilization: None,
        });
        s.ingress = Some(IngressSpec {
            enabled: true,
            ..IngressSpec::default()
        });
    }));
    cb.metadata.name = Some("Bad_Name".into());
    let f = fields(&cb);
    for want in [
        "metadata.name",
        "spec.replicas",
        "spec.model.apiKeySecretRef",
        "spec.autoscaling.minReplicas",
        "spec.ingress.host",
    ] {
        assert!(f.contains(&want.to_owned()), "{want} missing from {f:?}");
    }
}

/// The operator's check and the runtime's check of the same key, with
/// another error between them, still name the field once.
#[test]
fn each_field_is_reported_once() {
    let cb = bot(with(|s| {
        s.model.backend = Some(ModelBackend::Openai);
        s.monitoring = Some(MonitoringSpec {
            enabled: true,
            ..MonitoringSpec::default()
        });
    }));
    let f = fields(&cb);
    let mut unique = f.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(f.len(), unique.len(), "duplicated fields: {f:?}");
}

// --- validate::parse ------------------------------------------------------------

fn raw(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "clawdbot.io/v1alpha1",
        "kind": "ClawdBot",
        "metadata": {"name": "bot", "namespace": "default", "generation": 3},
        "spec": spec,
        "status": {"conditions": "garbage"},
    }))
    .expect("object")
}

#[track_caller]
fn parse_error(spec: Value, field: &str) -> FieldError {
    let e = validate::parse(&raw(spec.clone())).expect_err("a type error");
    assert_eq!(e.field, field, "{spec}: {e}");
    assert!(!e.message.is_empty());
    e
}

#[test]
fn parse_names_the_badly_typed_field() {
    let e = parse_error(json!({"replicas": "three"}), "spec.replicas");
    assert!(
        e.message.contains("three") || e.message.contains("string"),
        "{e}"
    );
    parse_error(json!({"model": 5}), "spec.model");
    parse_error(
        json!({"model": {"temperature": "hot"}}),
        "spec.model.temperature",
    );
    parse_error(
        json!({"model": {"fallbacks": [{"endpoint": "http://a"}, {"endpoint": 7}]}}),
        "spec.model.fallbacks[1].endpoint",
    );
    parse_error(
        json!({"model": {"fallbacks": [{}]}}),
        "spec.model.fallbacks[0]",
    );
    parse_error(
        json!({"model": {"backend": "anthropic"}}),
        "spec.model.backend",
    );
    parse_error(
        json!({"imagePullPolicy": "Sometimes"}),
        "spec.imagePullPolicy",
    );
    parse_error(
        json!({"channels": {"dingtalk": {"enabled": "yes"}}}),
        "spec.channels.dingtalk.enabled",
    );
    parse_error(
        json!({"channels": {"feishu": {"mode": "ws"}}}),
        "spec.channels.feishu.mode",
    );
    parse_error(
        json!({"autoscaling": {"minReplicas": 1}}),
        "spec.autoscaling",
    );
    parse_error(
        json!({"redis": {"urlSecretRef": {"name": "r"}}}),
        "spec.redis.urlSecretRef",
    );
    parse_error(json!({"paused": "no"}), "spec.paused");
    parse_error(json!("not a map"), "spec");
}

#[test]
fn parse_reads_good_objects() {
    for spec in [json!(null), json!({})] {
        let cb = validate::parse(&raw(spec)).expect("an empty spec is all defaults");
        assert_eq!(cb.spec, ClawdBotSpec::default());
        assert_eq!(cb.metadata.generation, Some(3));
        assert_eq!(
            cb.status, None,
            "an unreadable status is dropped, not an error"
        );
    }
    let mut obj = raw(json!({"replicas": 2, "model": {"endpoint": "http://m/v1"}}));
    obj.data.as_object_mut().expect("object").remove("spec");
    assert_eq!(
        validate::parse(&obj).expect("no spec").spec,
        ClawdBotSpec::default()
    );
    let cb = validate::parse(&raw(
        json!({"replicas": 2, "model": {"endpoint": "http://m/v1"}}),
    ))
    .expect("parses");
    assert_eq!(cb.spec.replicas, Some(2));
    assert_eq!(cb.spec.model.endpoint.as_deref(), Some("http://m/v1"));
    // Every example parses through the same path the controller uses.
    for (_, path) in common::cases() {
        common::load_clawdbot(&path);
    }
}

// --- status::next_status -------------------------------------------------------

fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).expect("time"))
}

fn deployment(
    generation: i64,
    observed: i64,
    replicas: i32,
    updated: i32,
    ready: i32,
) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.generation = Some(generation);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(observed),
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    d
}

fn observe<'a>(
    health: Health,
    paused: bool,
    dep: Option<&'a Deployment>,
    now: i64,
) -> Observation<'a> {
    Observation {
        health,
        paused,
        deployment: dep,
        auth_secret_name: None,
        now: time(now),
    }
}

fn bot_with_replicas(replicas: Option<i32>) -> ClawdBot {
    let mut cb = bot(with(|s| s.replicas = replicas));
    cb.metadata.generation = Some(7);
    cb
}

fn cond<'a>(s: &'a ClawdBotStatus, t: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition: {:?}", s.conditions))
}

fn is(s: &ClawdBotStatus, t: &str) -> &'static str {
    match cond(s, t).status.as_str() {
        "True" => "True",
        "False" => "False",
        other => panic!("{t}: status {other}"),
    }
}

#[test]
fn ready_when_rolled_out() {
    let cb = bot_with_replicas(Some(3));
    let dep = deployment(4, 4, 3, 3, 3);
    let s = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "Progressing", "Degraded", "Paused", "StateShared"]
    );
    assert_eq!(is(&s, "Ready"), "True");
    assert_eq!(cond(&s, "Ready").reason, "Available");
    assert_eq!(is(&s, "Progressing"), "False");
    assert_eq!(is(&s, "Degraded"), "False");
    assert_eq!(is(&s, "Paused"), "False");
    for c in &s.conditions {
        assert_eq!(c.observed_generation, Some(7), "{}", c.type_);
        assert_eq!(c.last_transition_time, time(0));
        assert!(!c.reason.is_empty() && !c.message.is_empty());
    }
    assert_eq!(s.observed_generation, Some(7));
    assert_eq!((s.replicas, s.ready_replicas), (Some(3), Some(3)));
    assert_eq!(
        s.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=bot,app.kubernetes.io/name=clawdbot"
        )
    );
    assert_eq!(s.endpoint.as_deref(), Some("http://bot.default.svc:18789"));
}

#[test]
fn ready_needs_current_generation_and_enough_pods() {
    let cb = bot_with_replicas(Some(3));
    let not_ready = [
        ("Deployment not observed yet", deployment(5, 4, 3, 3, 3)),
        ("too few ready", deployment(4, 4, 3, 3, 2)),
        ("too few updated", deployment(4, 4, 4, 2, 3)),
    ];
    for (why, dep) in &not_ready {
        let s = next_status(&cb, &observe(Health::Ok, false, Some(dep), 0));
        assert_eq!(is(&s, "Ready"), "False", "{why}");
        assert_eq!(cond(&s, "Ready").reason, "NotAvailable", "{why}");
        assert_eq!(is(&s, "Progressing"), "True", "{why}");
        assert_eq!(is(&s, "Degraded"), "False", "{why}");
    }
    // More than desired (a surge pod) is still ready.
    let s = next_status(
        &cb,
        &observe(Health::Ok, false, Some(&deployment(4, 4, 4, 4, 4)), 0),
    );
    assert_eq!(is(&s, "Ready"), "True");
    // Desired comes from autoscaling.minReplicas when spec.replicas is unset.
    let mut auto = bot_with_replicas(None);
    auto.spec.autoscaling = Some(AutoscalingSpec {
        min_replicas: Some(2),
        max_replicas: 5,
        target_cpu_utilization: None,
    });
    let dep = deployment(1, 1, 1, 1, 1);
    assert_eq!(
        is(
            &next_status(&auto, &observe(Health::Ok, false, Some(&dep), 0)),
            "Ready"
        ),
        "False"
    );
    let dep = deployment(1, 1, 2, 2, 2);
    assert_eq!(
        is(
            &next_status(&auto, &observe(Health::Ok, false, Some(&dep), 0)),
            "Ready"
        ),
        "True"
    );
    // Scaled to zero: nothing to wait for.
    let zero = bot_with_replicas(Some(0));
    let dep = deployment(2, 2, 0, 0, 0);
    assert_eq!(
        is(
            &next_status(&zero, &observe(Health::Ok, false, Some(&dep), 0)),
            "Ready"
        ),
        "True"
    );
}

#[test]
fn no_deployment_yet() {
    let cb = bot_with_replicas(None);
    let s = next_status(&cb, &observe(Health::Ok, false, None, 0));
    assert_eq!(is(&s, "Ready"), "False");
    assert_eq!(is(&s, "Progressing"), "True");
    assert_eq!(cond(&s, "Progressing").reason, "Creating");
    assert_eq!((s.replicas, s.ready_replicas), (None, None));
}

#[test]
fn degraded_on_invalid_spec_missing_secrets_and_apply_errors() {
    let cb = bot_with_replicas(Some(1));
    let s = next_status(
        &cb,
        &observe(
            Health::Invalid("spec.model.endpoint: is required".into()),
            false,
            None,
            0,
        ),
    );
    assert_eq!(is(&s, "Degraded"), "True");
    assert_eq!(cond(&s, "Degraded").reason, "InvalidSpec");
    assert!(cond(&s, "Degraded").message.contains("spec.model.endpoint"));
    assert_eq!(is(&s, "Ready"), "False");
    assert_eq!(
        is(&s, "Progressing"),
        "False",
        "nothing will be created from an invalid spec"
    );

    // Invalid while an older Deployment keeps running: still Degraded, not Ready.
    let dep = deployment(1, 1, 1, 1, 1);
    let s = next_status(
        &cb,
        &observe(Health::Invalid("x: y".into()), false, Some(&dep), 0),
    );
    assert_eq!((is(&s, "Degraded"), is(&s, "Ready")), ("True", "False"));
    assert_eq!(cond(&s, "Ready").reason, "Degraded");

    let s = next_status(
        &cb,
        &observe(
            Health::MissingSecrets(vec!["a".into(), "b".into()]),
            false,
            Some(&dep),
            0,
        ),
    );
    assert_eq!(cond(&s, "Degraded").reason, "SecretNotFound");
    assert!(cond(&s, "Degraded").message.contains("a, b"));
    assert_eq!(is(&s, "Ready"), "False");

    let s = next_status(
        &cb,
        &observe(Health::ApplyFailed("denied".into()), false, Some(&dep), 0),
    );
    assert_eq!(cond(&s, "Degraded").reason, "ApplyFailed");
    assert_eq!(is(&s, "Ready"), "False");
}

#[test]
fn paused() {
    let cb = bot_with_replicas(Some(1));
    let dep = deployment(1, 1, 1, 1, 1);
    let s = next_status(&cb, &observe(Health::Ok, true, Some(&dep), 0));
    assert_eq!(is(&s, "Paused"), "True");
    assert_eq!(cond(&s, "Paused").reason, "Paused");
    assert!(cond(&s, "Paused").message.contains("spec.paused"));
    let s = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    assert_eq!(is(&s, "Paused"), "False");
}

/// Where sessions, logs and IM deliveries live: advisory, never Degraded.
#[test]
fn state_shared_names_what_is_pod_local() {
    let dep = deployment(1, 1, 1, 1, 1);
    let status = |f: &dyn Fn(&mut ClawdBotSpec)| {
        let mut cb = bot(with(f));
        cb.metadata.generation = Some(1);
        next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0))
    };
    let slack_on = |s: &mut ClawdBotSpec| {
        s.channels.slack = Some(BasicChannel {
            enabled: true,
            credentials_secret_ref: secret("slack"),
        });
    };

    let s = status(&|_| {});
    assert_eq!(is(&s, "StateShared"), "False");
    assert_eq!(cond(&s, "StateShared").reason, "PodLocal");
    let m = &cond(&s, "StateShared").message;
    assert!(
        m.contains("spec.redis") && m.contains("conversation logs"),
        "{m}"
    );
    assert!(!m.contains("IM deliveries"), "no channel is on: {m}");
    assert_eq!(is(&s, "Ready"), "True", "advisory only");
    assert_eq!(is(&s, "Degraded"), "False", "advisory only");

    let s = status(&|sp| slack_on(sp));
    let m = &cond(&s, "StateShared").message;
    assert!(
        m.contains("IM deliveries") && m.contains("25 s drain"),
        "{m}"
    );

    let s = status(&|sp| {
        slack_on(sp);
        sp.database = Some(DatabaseSpec {
            url_secret_ref: key("db", "url"),
        });
    });
    assert_eq!(is(&s, "StateShared"), "False");
    assert_eq!(cond(&s, "StateShared").reason, "SessionsPodLocal");
    let m = &cond(&s, "StateShared").message;
    assert!(m.contains("IM deliveries are in the database"), "{m}");

    let s = status(&|sp| {
        slack_on(sp);
        sp.redis = Some(RedisSpec {
            url_secret_ref: key("redis", "url"),
        });
    });
    assert_eq!(is(&s, "StateShared"), "True");
    assert_eq!(cond(&s, "StateShared").reason, "Redis");
    let m = &cond(&s, "StateShared").message;
    assert!(m.contains("sessions and IM deliveries"), "{m}");
    assert!(m.contains("until spec.database is set"), "{m}");
}

#[test]
fn status_is_stable_and_transition_times_move_only_on_flips() {
    let mut cb = bot_with_replicas(Some(2));
    let ready = deployment(3, 3, 2, 2, 2);
    let first = next_status(&cb, &observe(Health::Ok, false, Some(&ready), 0));
    cb.status = Some(first.clone());

    // Same observation later: identical status, times unchanged.
    let again = next_status(&cb, &observe(Health::Ok, false, Some(&ready), 100));
    assert_eq!(again, first);
    cb.status = Some(again.clone());
    assert_eq!(
        next_status(&cb, &observe(Health::Ok, false, Some(&ready), 200)),
        first
    );

    // One pod goes unready: Ready and Progressing flip (new time), the others keep theirs.
    let degraded_dep = deployment(3, 3, 2, 2, 1);
    let flipped = next_status(&cb, &observe(Health::Ok, false, Some(&degraded_dep), 300));
    assert_eq!(is(&flipped, "Ready"), "False");
    assert_eq!(cond(&flipped, "Ready").last_transition_time, time(300));
    assert_eq!(
        cond(&flipped, "Progressing").last_transition_time,
        time(300)
    );
    assert_eq!(cond(&flipped, "Degraded").last_transition_time, time(0));
    assert_eq!(cond(&flipped, "Paused").last_transition_time, time(0));
    assert_eq!(flipped.ready_replicas, Some(1));

    // Reason/message changes without a status flip keep the time.
    cb.status = Some(flipped.clone());
    let still = next_status(
        &cb,
        &observe(Health::Ok, false, Some(&deployment(3, 3, 2, 2, 0)), 400),
    );
    assert_eq!(cond(&still, "Ready").last_transition_time, time(300));
    assert_ne!(
        cond(&still, "Ready").message,
        cond(&flipped, "Ready").message
    );

    // And back: a new transition time.
    cb.status = Some(still);
    let back = next_status(&cb, &observe(Health::Ok, false, Some(&ready), 500));
    assert_eq!(is(&back, "Ready"), "True");
    assert_eq!(cond(&back, "Ready").last_transition_time, time(500));
    assert_eq!(cond(&back, "Degraded").last_transition_time, time(0));

    // Twice with the same flipped observation: identical.
    cb.status = Some(back.clone());
    assert_eq!(
        next_status(&cb, &observe(Health::Ok, false, Some(&ready), 600)),
        back
    );
}

#[test]
fn auth_secret_name_is_kept() {
    let mut cb = bot_with_replicas(None);
    let mut obs = observe(Health::Ok, false, None, 0);
    obs.auth_secret_name = Some("bot-api-keys".into());
    let s = next_status(&cb, &obs);
    assert_eq!(s.auth_secret_name.as_deref(), Some("bot-api-keys"));
    cb.status = Some(s);
    let s = next_status(&cb, &observe(Health::Ok, false, None, 1));
    assert_eq!(
        s.auth_secret_name.as_deref(),
        Some("bot-api-keys"),
        "remembered"
    );
}

#[test]
fn trusted_proxies_and_rate_limit_are_checked_through_the_runtime_rules() {
    let cb = bot(with(|s| {
        s.trusted_proxies = Some(vec!["10.0.0.0/8".into(), "not-a-net".into()]);
        s.rate_limit = Some(clawdbot_operator::crd::RateLimitSpec {
            requests_per_second: -1.0,
            burst: Some(0),
        });
    }));
    let fields: Vec<String> = validate::validate(&cb)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert!(
        fields.contains(&"spec.trustedProxies[1]".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.rateLimit.requestsPerSecond".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.rateLimit.burst".to_owned()),
        "{fields:?}"
    );
}
