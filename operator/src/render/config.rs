//! The bot-runtime configuration a ClawdBot asks for, rendered from the
//! runtime's own config types, and the environment that carries its secrets.

use clawdbot_config::{self as rc, RuntimeConfig};
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, SecretEnvSource, SecretKeySelector,
};

use super::runtime::{KNOWLEDGE_CLAIM_DIR, KNOWLEDGE_CONFIGMAP_DIR, MODELS_CLAIM_DIR};
use crate::crd::{
    ClawdBot, DatabaseSpec, DingTalkMode, FeishuMode, IMAGE_EMBEDDINGS_PATH, IMAGE_MODEL_PATH,
    ModelBackend, RedisSpec, SecretKeyRef,
};
use crate::labels;

/// Where the pod's writable scratch volume is mounted.
pub const DATA_DIR: &str = "/var/lib/clawdbot";
/// The runtime's drain deadline; the pod's grace period is longer.
pub const DRAIN_DEADLINE_SECS: u64 = 25;

/// In-cluster proxy hops (ingress controllers) live in private ranges.
pub const DEFAULT_TRUSTED_PROXIES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

pub fn fallback_key_env(i: usize) -> String {
    format!("MODEL_FALLBACK_{}_API_KEY", i + 1)
}

pub fn runtime_config(cb: &ClawdBot) -> RuntimeConfig {
    let spec = &cb.spec;
    let m = &spec.model;
    let mut cfg = RuntimeConfig::default();
    cfg.server.listen = format!("0.0.0.0:{}", labels::HTTP_PORT);
    cfg.server.metrics_listen = Some(format!("0.0.0.0:{}", labels::METRICS_PORT));
    cfg.server.data_dir = DATA_DIR.into();
    cfg.server.drain_deadline_secs = DRAIN_DEADLINE_SECS;
    cfg.logging.format = rc::LogFormat::Json;
    cfg.server.trusted_proxies = match &spec.trusted_proxies {
        Some(list) => list.clone(),
        None => DEFAULT_TRUSTED_PROXIES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    cfg.server.cors_allowed_origins = spec.cors_allowed_origins.clone();
    if let Some(logs) = &spec.conversation_logs {
        cfg.logs.retention_days = logs.retention_days;
    }
    if let Some(rl) = &spec.rate_limit {
        cfg.server.rate_limit.requests_per_second = rl.requests_per_second;
        if let Some(b) = rl.burst {
            cfg.server.rate_limit.burst = b;
        }
    }
    // Always explicit: the runtime's own default (`auto`) would load a
    // model file the pod's memory was not sized for.
    cfg.model.backend = Some(match (m.backend, &m.endpoint) {
        (Some(ModelBackend::OpenAI), _) | (None, Some(_)) => rc::ModelBackend::Openai,
        (Some(ModelBackend::Local), _) => rc::ModelBackend::Local,
        (Some(ModelBackend::None), _) | (None, None) => rc::ModelBackend::None,
    });
    if m.backend == Some(ModelBackend::Local) {
        let local = m.local.clone().unwrap_or_default();
        cfg.model.local.path = match (&local.persistent_volume_claim, &local.path) {
            (Some(_), Some(file)) => format!("{MODELS_CLAIM_DIR}/{}", file.trim_start_matches('/')),
            (_, Some(path)) => path.clone(),
            (_, None) => IMAGE_MODEL_PATH.into(),
        };
        cfg.model.local.sha256 = local.sha256;
        if let Some(n) = local.context_size {
            cfg.model.local.context_size = n;
        }
        if let Some(n) = local.parallel {
            cfg.model.local.parallel = n;
        }
    }
    cfg.knowledge.embeddings_path = IMAGE_EMBEDDINGS_PATH.into();
    // The keys arrive from the Secret as CLAWDBOT_ENCRYPTION__KEYS.
    if let Some(e) = &cb.spec.encryption {
        cfg.encryption.enabled = true;
        cfg.encryption.active = Some(e.active.clone());
        cfg.encryption.digest = match e.digest {
            Some(crate::crd::KeyDigest::Sm3) => rc::encryption::DigestAlgorithm::Sm3,
            _ => rc::encryption::DigestAlgorithm::Sha256,
        };
    }
    cfg.knowledge.path = spec.knowledge.as_ref().map(|k| {
        if k.persistent_volume_claim.is_some() {
            KNOWLEDGE_CLAIM_DIR.into()
        } else {
            KNOWLEDGE_CONFIGMAP_DIR.into()
        }
    });
    cfg.model.endpoint = m.endpoint.clone();
    if let Some(name) = &m.name {
        cfg.model.name = name.clone();
    }
    cfg.model.system_prompt = m.system_prompt.clone();
    cfg.model.temperature = m.temperature;
    cfg.model.max_tokens = m.max_tokens;
    cfg.model.fallbacks = m
        .fallbacks
        .iter()
        .enumerate()
        .map(|(i, f)| rc::ModelFallback {
            endpoint: f.endpoint.clone(),
            api_key: None,
            api_key_env: f.api_key_secret_ref.as_ref().map(|_| fallback_key_env(i)),
            name: f.name.clone(),
        })
        .collect();
    let ch = &spec.channels;
    if let Some(d) = &ch.dingtalk {
        cfg.dingtalk.enabled = d.enabled;
        cfg.dingtalk.mode = match d.mode {
            Some(DingTalkMode::Stream) => rc::DingTalkMode::Stream,
            _ => rc::DingTalkMode::Http,
        };
    }
    if let Some(f) = &ch.feishu {
        cfg.feishu.enabled = f.enabled;
        cfg.feishu.mode = match f.mode {
            Some(FeishuMode::WebSocket) => rc::FeishuMode::Websocket,
            _ => rc::FeishuMode::Webhook,
        };
        if f.lark {
            cfg.feishu.api_base = "https://open.larksuite.com".into();
        }
        cfg.feishu.allow_unencrypted = f.allow_unencrypted;
    }
    if let Some(w) = &ch.wecom {
        cfg.wecom.enabled = w.enabled;
    }
    if let Some(s) = &ch.slack {
        cfg.slack.enabled = s.enabled;
    }
    cfg
}

fn enabled_secret(enabled: bool, r: Option<&crate::crd::SecretRef>) -> Option<&str> {
    r.filter(|_| enabled).map(|r| r.name.as_str())
}

fn secret_key_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Environment that carries the bot's secrets, and whole-Secret imports for
/// the IM channels (their keys are the runtime's config leaf names, so
/// `app_secret` in the DingTalk Secret becomes `CLAWDBOT_DINGTALK__app_secret`).
pub fn secret_env(cb: &ClawdBot) -> (Vec<EnvVar>, Vec<EnvFromSource>) {
    let spec = &cb.spec;
    let mut env = Vec::new();
    if let Some(r) = &spec.model.api_key_secret_ref {
        env.push(secret_key_env("MODEL_API_KEY", r));
    }
    for (i, f) in spec.model.fallbacks.iter().enumerate() {
        if let Some(r) = &f.api_key_secret_ref {
            env.push(secret_key_env(&fallback_key_env(i), r));
        }
    }
    env.push(secret_key_env("CLAWDBOT_API_KEYS", &api_keys_ref(cb)));
    if let Some(r) = redis_url_ref(cb) {
        env.push(secret_key_env("REDIS_URL", &r));
    }
    if let Some(r) = database_url_ref(cb) {
        env.push(secret_key_env("DATABASE_URL", &r));
    }
    if let Some(e) = &spec.encryption {
        env.push(secret_key_env(
            "CLAWDBOT_ENCRYPTION__KEYS",
            &e.keys_secret_ref,
        ));
    }
    let ch = &spec.channels;
    let mut env_from = Vec::new();
    let mut import = |prefix: &str, secret: Option<&str>| {
        if let Some(name) = secret {
            env_from.push(EnvFromSource {
                prefix: Some(prefix.to_owned()),
                secret_ref: Some(SecretEnvSource {
                    name: name.to_owned(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            });
        }
    };
    if let Some(d) = &ch.dingtalk {
        import(
            "CLAWDBOT_DINGTALK__",
            enabled_secret(d.enabled, d.credentials_secret_ref.as_ref()),
        );
    }
    if let Some(f) = &ch.feishu {
        import(
            "CLAWDBOT_FEISHU__",
            enabled_secret(f.enabled, f.credentials_secret_ref.as_ref()),
        );
    }
    if let Some(w) = &ch.wecom {
        import(
            "CLAWDBOT_WECOM__",
            enabled_secret(w.enabled, w.credentials_secret_ref.as_ref()),
        );
    }
    if let Some(s) = &ch.slack {
        import(
            "CLAWDBOT_SLACK__",
            enabled_secret(s.enabled, s.credentials_secret_ref.as_ref()),
        );
    }
    (env, env_from)
}

/// Where the runtime's REDIS_URL comes from: the user's Secret, or the
/// operator's connections Secret for managed Redis.
pub fn redis_url_ref(cb: &ClawdBot) -> Option<SecretKeyRef> {
    let bot = kube::ResourceExt::name_any(cb);
    match cb.spec.redis.as_ref()? {
        RedisSpec {
            external: Some(e), ..
        } => Some(e.url_secret_ref.clone()),
        RedisSpec {
            managed: Some(_), ..
        } => Some(SecretKeyRef {
            name: labels::connections_secret_name(&bot),
            key: labels::REDIS_URL_KEY.into(),
        }),
        _ => None,
    }
}

/// Where the runtime's DATABASE_URL comes from: the user's Secret, the
/// operator's connections Secret, or the Secret CloudNativePG writes.
pub fn database_url_ref(cb: &ClawdBot) -> Option<SecretKeyRef> {
    let bot = kube::ResourceExt::name_any(cb);
    match cb.spec.database.as_ref()? {
        DatabaseSpec {
            external: Some(e), ..
        } => Some(e.url_secret_ref.clone()),
        DatabaseSpec {
            managed: Some(_), ..
        } => Some(SecretKeyRef {
            name: labels::connections_secret_name(&bot),
            key: labels::DATABASE_URL_KEY.into(),
        }),
        DatabaseSpec {
            cloud_native_pg: Some(_),
            ..
        } => Some(SecretKeyRef {
            name: labels::cnpg_app_secret_name(&bot),
            key: labels::CNPG_URI_KEY.into(),
        }),
        _ => None,
    }
}

/// The Secret key holding the runtime's API keys: the user's, or the generated one.
pub fn api_keys_ref(cb: &ClawdBot) -> SecretKeyRef {
    cb.spec
        .auth
        .api_keys_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef {
            name: labels::api_keys_secret_name(&kube::ResourceExt::name_any(cb)),
            key: labels::API_KEYS_KEY.to_owned(),
        })
}

/// Names of every Secret the pods read, for hashing and for status messages.
pub fn referenced_secrets(cb: &ClawdBot) -> Vec<String> {
    let (env, env_from) = secret_env(cb);
    let mut names: Vec<String> = env
        .iter()
        .filter_map(|e| {
            e.value_from
                .as_ref()?
                .secret_key_ref
                .as_ref()
                .map(|s| s.name.clone())
        })
        .chain(
            env_from
                .iter()
                .filter_map(|e| e.secret_ref.as_ref().map(|s| s.name.clone())),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}
