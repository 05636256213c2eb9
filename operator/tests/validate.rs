//! `validate::parse` and `validate::validate`: every validation rule with a
//! valid and an invalid case (the error naming the field), and reading
//! badly typed specs. The conditions are in status.rs.

mod common;

use common::{bot, key, secret, with};

use clawdbot_operator::crd::{
    AlertOverride, AutoscalingSpec, BasicChannel, ClawdBot, ClawdBotSpec, DatabaseSpec,
    DingTalkChannel, DisruptionBudgetSpec, FeishuChannel, IngressSpec, ModelBackend,
    ModelFallbackSpec, MonitoringSpec, RedisSpec,
};
use clawdbot_operator::validate::{self, FieldError};
use kube::api::DynamicObject;
use serde_json::{Value, json};

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
        ok(with(|s| {
            s.replicas = Some(r);
            s.redis = Some(RedisSpec {
                external: external("r"),
                ..RedisSpec::default()
            });
        }));
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
fn local_model_and_knowledge_sources_are_checked() {
    use clawdbot_operator::crd::{KnowledgeSpec, LocalModelSpec};
    ok(with(|s| s.model.backend = Some(ModelBackend::Local)));
    bad(
        with(|s| {
            s.model.backend = Some(ModelBackend::Local);
            s.model.local = Some(LocalModelSpec {
                persistent_volume_claim: Some("models".into()),
                ..LocalModelSpec::default()
            });
        }),
        "spec.model.local.path",
        "persistentVolumeClaim",
    );
    bad(
        with(|s| {
            s.model.local = Some(LocalModelSpec {
                parallel: Some(0),
                sha256: Some("xyz".into()),
                ..LocalModelSpec::default()
            });
        }),
        "spec.model.local.parallel",
        "outside",
    );
    bad(
        with(|s| s.knowledge = Some(KnowledgeSpec::default())),
        "spec.knowledge",
        "exactly one",
    );
    bad(
        with(|s| {
            s.knowledge = Some(KnowledgeSpec {
                name: Some("cm".into()),
                persistent_volume_claim: Some("pvc".into()),
            })
        }),
        "spec.knowledge",
        "exactly one",
    );
}

#[test]
fn openai_backend_needs_an_endpoint() {
    ok(with(|s| {
        s.model.backend = Some(ModelBackend::OpenAI);
        s.model.endpoint = Some("http://vllm:8000/v1".into());
    }));
    ok(with(|s| s.model.backend = Some(ModelBackend::None)));
    let errors = bad(
        with(|s| s.model.backend = Some(ModelBackend::OpenAI)),
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
                    allow_unencrypted: false,
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
            enabled: true,
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization: None,
        });
        s.redis = Some(RedisSpec {
            managed: Some(Default::default()),
            ..RedisSpec::default()
        });
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
            enabled: true,
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
fn monitoring_is_accepted() {
    for enabled in [false, true] {
        ok(with(|s| {
            s.monitoring = Some(MonitoringSpec {
                enabled,
                scrape_interval: Some("30s".into()),
                ..MonitoringSpec::default()
            })
        }));
    }
}

#[test]
fn alert_overrides_name_real_alerts_and_sane_thresholds() {
    let alerts = |name: &str, threshold: f64| {
        with(|s| {
            s.monitoring = Some(MonitoringSpec {
                alerts: [(
                    name.to_owned(),
                    AlertOverride {
                        threshold: Some(threshold),
                        ..AlertOverride::default()
                    },
                )]
                .into(),
                ..MonitoringSpec::default()
            })
        })
    };
    ok(alerts("ClawdBotHighLatency", 1.5));
    bad(
        alerts("ClawdBotHighLatancy", 1.5),
        "spec.monitoring.alerts.ClawdBotHighLatancy",
        "no such alert",
    );
    bad(
        alerts("ClawdBotHighErrorRate", -0.1),
        "spec.monitoring.alerts.ClawdBotHighErrorRate.threshold",
        "0 or more",
    );
}

#[test]
fn all_problems_at_once() {
    let mut cb = bot(with(|s| {
        s.replicas = Some(-1);
        s.model.api_key_secret_ref = Some(key("k", "v"));
        s.autoscaling = Some(AutoscalingSpec {
            enabled: true,
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
        s.model.backend = Some(ModelBackend::OpenAI);
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
        json!({"redis": {"external": {"urlSecretRef": {"name": "r"}}}}),
        "spec.redis.external.urlSecretRef",
    );
    // The shape before the unions: named, with where it moved.
    let e = parse_error(
        json!({"redis": {"urlSecretRef": {"name": "r", "key": "url"}}}),
        "spec.redis.urlSecretRef",
    );
    assert!(
        e.message.contains("spec.redis.external.urlSecretRef"),
        "{e}"
    );
    let e = parse_error(
        json!({"database": {"urlSecretRef": {"name": "d", "key": "url"}}}),
        "spec.database.urlSecretRef",
    );
    assert!(
        e.message.contains("spec.database.external.urlSecretRef"),
        "{e}"
    );
    let e = parse_error(
        json!({"model": {"backend": "openai"}}),
        "spec.model.backend",
    );
    assert!(e.message.contains("OpenAI"), "{e}");
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

#[test]
fn proxies_cors_rate_limit_and_retention_are_checked_through_the_runtime_rules() {
    let cb = bot(with(|s| {
        s.trusted_proxies = Some(vec!["10.0.0.0/8".into(), "not-a-net".into()]);
        s.cors_allowed_origins = vec!["https://chat.example.com/path".into()];
        s.conversation_logs = Some(clawdbot_operator::crd::ConversationLogsSpec {
            retention_days: Some(0),
        });
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
    assert!(
        fields.contains(&"spec.corsAllowedOrigins[0]".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.conversationLogs.retentionDays".to_owned()),
        "{fields:?}"
    );
}

fn external(name: &str) -> Option<clawdbot_operator::crd::ExternalRef> {
    Some(clawdbot_operator::crd::ExternalRef {
        url_secret_ref: key(name, "url"),
    })
}

fn managed_db(f: impl FnOnce(&mut clawdbot_operator::crd::ManagedPostgres)) -> ClawdBotSpec {
    let mut m = clawdbot_operator::crd::ManagedPostgres::default();
    f(&mut m);
    with(|s| {
        s.database = Some(DatabaseSpec {
            managed: Some(m),
            ..DatabaseSpec::default()
        })
    })
}

#[test]
fn redis_and_database_unions_take_exactly_one_member() {
    ok(with(|s| {
        s.redis = Some(RedisSpec {
            managed: Some(Default::default()),
            ..RedisSpec::default()
        })
    }));
    ok(with(|s| {
        s.redis = Some(RedisSpec {
            external: external("r"),
            ..RedisSpec::default()
        })
    }));
    bad(
        with(|s| s.redis = Some(RedisSpec::default())),
        "spec.redis",
        "exactly one of spec.redis.managed and spec.redis.external",
    );
    bad(
        with(|s| {
            s.redis = Some(RedisSpec {
                managed: Some(Default::default()),
                external: external("r"),
            })
        }),
        "spec.redis",
        "exactly one",
    );
    bad(
        with(|s| {
            s.database = Some(DatabaseSpec {
                managed: Some(Default::default()),
                external: external("d"),
                ..DatabaseSpec::default()
            })
        }),
        "spec.database",
        "exactly one of spec.database.managed, spec.database.cloudNativePG and spec.database.external",
    );
    bad(
        with(|s| s.database = Some(DatabaseSpec::default())),
        "spec.database",
        "exactly one",
    );
}

#[test]
fn sizes_must_be_quantities() {
    ok(managed_db(|m| m.size = Some("20Gi".into())));
    bad(
        managed_db(|m| m.size = Some("20 gigs".into())),
        "spec.database.managed.size",
        "not a quantity",
    );
    bad(
        managed_db(|m| {
            m.backup = Some(clawdbot_operator::crd::BackupSpec {
                enabled: true,
                volume: Some(clawdbot_operator::crd::VolumeSpec {
                    size: "lots".into(),
                    storage_class_name: None,
                }),
                ..Default::default()
            })
        }),
        "spec.database.managed.backup.volume.size",
        "not a quantity",
    );
    bad(
        with(|s| {
            s.redis = Some(RedisSpec {
                managed: Some(clawdbot_operator::crd::ManagedRedis {
                    persistence: Some(clawdbot_operator::crd::VolumeSpec {
                        size: "1GB".into(),
                        storage_class_name: None,
                    }),
                    ..Default::default()
                }),
                ..RedisSpec::default()
            })
        }),
        "spec.redis.managed.persistence.size",
        "not a quantity",
    );
    bad(
        with(|s| {
            s.database = Some(DatabaseSpec {
                cloud_native_pg: Some(clawdbot_operator::crd::CloudNativePg {
                    storage: clawdbot_operator::crd::CnpgStorage {
                        size: "ten".into(),
                        storage_class: None,
                    },
                    ..Default::default()
                }),
                ..DatabaseSpec::default()
            })
        }),
        "spec.database.cloudNativePG.storage.size",
        "not a quantity",
    );
}

#[test]
fn a_managed_database_image_names_its_major_version() {
    ok(managed_db(|m| {
        m.image = Some("registry.example.com/pg/postgres:16.4-bookworm".into())
    }));
    bad(
        managed_db(|m| m.image = Some("postgres:latest".into())),
        "spec.database.managed.image",
        "major version",
    );
    bad(
        managed_db(|m| {
            m.backup = Some(clawdbot_operator::crd::BackupSpec {
                enabled: true,
                schedule: Some("daily".into()),
                ..Default::default()
            })
        }),
        "spec.database.managed.backup.schedule",
        "five-field cron",
    );
}

#[test]
fn managed_children_names_must_fit() {
    let mut cb = bot(managed_db(|_| {}));
    cb.metadata.name = Some(format!("b{}", "x".repeat(42)));
    let errors = validate::validate(&cb);
    assert!(
        errors
            .iter()
            .any(|e| e.field == "metadata.name" && e.message.contains("at most 42")),
        "{errors:?}"
    );
    cb.metadata.name = Some(format!("b{}", "x".repeat(41)));
    assert!(validate::validate(&cb).is_empty());
}

#[test]
fn more_than_one_pod_needs_shared_sessions() {
    ok(with(|s| s.replicas = Some(1)));
    bad(
        with(|s| s.replicas = Some(3)),
        "spec.redis",
        "is required with 3 replicas",
    );
    bad(
        with(|s| {
            s.autoscaling = Some(AutoscalingSpec {
                enabled: true,
                max_replicas: 3,
                ..AutoscalingSpec::default()
            })
        }),
        "spec.redis",
        "is required with autoscaling",
    );
    // A block without enabled: true is not autoscaling.
    ok(with(|s| {
        s.autoscaling = Some(AutoscalingSpec {
            max_replicas: 3,
            ..AutoscalingSpec::default()
        })
    }));
    ok(with(|s| {
        s.replicas = Some(3);
        s.redis = Some(RedisSpec {
            external: external("r"),
            ..RedisSpec::default()
        });
    }));
    // Several pods each logging to their own SQLite file is allowed
    // (StateShared says what is lost with a pod).
    ok(with(|s| {
        s.replicas = Some(3);
        s.redis = Some(RedisSpec {
            managed: Some(Default::default()),
            ..RedisSpec::default()
        });
    }));
}
