//! Configuration of `bot-runtime`, shared with `clawdbot-operator` so that the
//! operator renders runtime config from the very types the runtime reads.
//!
//! No server dependencies here: serde, schemars and a YAML parser.

pub mod encryption;
mod env;
pub mod knowledge;
mod secret;
mod types;
mod validate;

use serde_json::Value;

pub use env::{ENV_ALIASES, EnvOverride};
pub use knowledge::{DialogConfig, DialogRule, KnowledgeConfig};
pub use secret::Secret;
pub use types::*;
pub use validate::{
    Issue, RequiredKey, parse_net, required_channel_keys, validate, validate_without_credentials,
};

/// Why a configuration was refused. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot parse the YAML: {0}")]
    Yaml(String),
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<Issue>),
}

impl ConfigError {
    /// One line per problem, `key: why`.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            ConfigError::Yaml(why) => vec![Issue {
                key: "(file)".into(),
                why: why.clone(),
            }],
            ConfigError::Invalid { key, why } => vec![Issue {
                key: key.clone(),
                why: why.clone(),
            }],
            ConfigError::Rejected(issues) => issues.clone(),
        }
    }
}

/// The JSON schema of the configuration file.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(RuntimeConfig)).expect("schema is JSON")
}

/// Parses the YAML text (empty means all defaults), applies the environment
/// overrides, then validates. The environment is passed in so tests and the
/// operator control it.
pub fn load<I>(yaml: &str, environment: I) -> Result<RuntimeConfig, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut doc = parse_yaml(yaml)?;
    let overrides = env::collect(environment);
    if !overrides.is_empty() {
        env::apply(&mut doc, &schema(), &overrides)?;
    }
    let cfg = from_value(doc)?;
    let issues = validate(&cfg);
    if issues.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Rejected(issues))
    }
}

/// Renders a configuration as YAML (the operator's ConfigMap content).
pub fn to_yaml(cfg: &RuntimeConfig) -> String {
    serde_saphyr::to_string(cfg).expect("config types always serialize")
}

fn parse_yaml(yaml: &str) -> Result<Value, ConfigError> {
    if yaml.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let doc: Value = serde_saphyr::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?;
    match doc {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(drop_nulls(doc)),
        _ => Err(ConfigError::Yaml(
            "the top level must be a mapping of keys".into(),
        )),
    }
}

/// A key with an empty value (`database:` with only comments below it) means
/// "use the default", the same as leaving the key out.
fn drop_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(drop_nulls).collect()),
        other => other,
    }
}

fn from_value(doc: Value) -> Result<RuntimeConfig, ConfigError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            why: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_input_gives_the_embedded_defaults() {
        assert_eq!(load("", env(&[])).unwrap(), RuntimeConfig::default());
        assert_eq!(
            load("# only a comment\n", env(&[])).unwrap(),
            RuntimeConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = load("model:\n  nmae: x\n", env(&[])).unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "model.nmae");
        assert!(issue.why.contains("nmae"), "{issue}");
    }

    #[test]
    fn wecom_agent_id_is_a_number_or_a_string() {
        for yaml in [
            "wecom:\n  agent_id: 1000002\n",
            "wecom:\n  agent_id: \"1000002\"\n",
        ] {
            let cfg = load(yaml, env(&[])).unwrap();
            assert_eq!(cfg.wecom.agent_id.as_deref(), Some("1000002"), "{yaml}");
        }
        let cfg = load("", env(&[("CLAWDBOT_WECOM__AGENT_ID", "1000002")])).unwrap();
        assert_eq!(cfg.wecom.agent_id.as_deref(), Some("1000002"));
        let err = load("wecom:\n  agent_id: [1]\n", env(&[])).unwrap_err();
        assert_eq!(err.issues()[0].key, "wecom.agent_id");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = load("model:\n  max_tokens: lots\n", env(&[])).unwrap_err();
        assert_eq!(err.issues()[0].key, "model.max_tokens");
    }

    #[test]
    fn environment_overrides_are_typed_by_the_schema() {
        let cfg = load(
            "model:\n  temperature: 0.1\n",
            env(&[
                ("CLAWDBOT_MODEL__TEMPERATURE", "0.7"),
                ("CLAWDBOT_MODEL__MAX_TOKENS", "256"),
                ("MODEL_API_KEY", "123456"),
                ("MODEL_ENDPOINT", "http://127.0.0.1:1/v1"),
                (
                    "CLAWDBOT_SERVER__CORS_ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("CLAWDBOT_API_KEYS", "abcdefgh,ijklmnop:admin"),
                ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.model.temperature, Some(0.7));
        assert_eq!(cfg.model.max_tokens, Some(256));
        assert_eq!(cfg.model.api_key.as_ref().unwrap().expose(), "123456");
        assert_eq!(cfg.model.effective_backend(), ModelBackend::Openai);
        assert_eq!(cfg.server.cors_allowed_origins.len(), 2);
        assert_eq!(cfg.auth.api_keys[1].scope, Scope::Admin);
        assert_eq!(cfg.redis.url.unwrap().expose(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn an_empty_model_endpoint_leaves_the_backend_to_auto() {
        // What Compose passes for `${MODEL_ENDPOINT:-}` when .env leaves it out.
        let cfg = load("", env(&[("MODEL_ENDPOINT", ""), ("MODEL_API_KEY", "")])).unwrap();
        assert_eq!(cfg.model.endpoint, None);
        assert_eq!(cfg.model.effective_backend(), ModelBackend::Auto);
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let err = load("", env(&[("CLAWDBOT_MODEL__MAX_TOKENS", "many")])).unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "model.max_tokens");
        assert!(issue.why.contains("CLAWDBOT_MODEL__MAX_TOKENS"), "{issue}");
        let err = load("", env(&[("CLAWDBOT_MODLE__NAME", "x")])).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
    }

    #[test]
    fn yaml_round_trips_through_the_renderer() {
        let mut cfg = RuntimeConfig::default();
        cfg.model.endpoint = Some("http://m:8000/v1".into());
        cfg.model.system_prompt = Some("Be brief.\nAlways.".into());
        let again = load(&to_yaml(&cfg), env(&[])).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn the_example_file_loads_and_mentions_every_key() {
        let text = include_str!("../../examples/config.example.yaml");
        load(text, env(&[])).expect("example config is valid");
        let schema = schema();
        let mut missing = Vec::new();
        collect_keys(&schema, &schema, &mut missing, text);
        assert!(
            missing.is_empty(),
            "keys not documented in config.example.yaml: {missing:?}"
        );
    }

    fn collect_keys(root: &Value, node: &Value, missing: &mut Vec<String>, text: &str) {
        let node = match node.get("$ref").and_then(Value::as_str) {
            Some(r) => &root["$defs"][r.rsplit('/').next().unwrap()],
            None => node,
        };
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                if !text.contains(&format!("{k}:")) {
                    missing.push(k.clone());
                }
                collect_keys(root, v, missing, text);
            }
        }
        if let Some(items) = node.get("items") {
            collect_keys(root, items, missing, text);
        }
    }

    #[test]
    fn an_enabled_channel_needs_its_credentials_named_key_by_key() {
        let err = load(
            "slack:\n  enabled: true\nwecom:\n  enabled: true\n",
            env(&[]),
        )
        .unwrap_err();
        let keys: Vec<String> = err.issues().into_iter().map(|i| i.key).collect();
        for k in [
            "slack.signing_secret",
            "slack.bot_token",
            "wecom.corp_id",
            "wecom.agent_id",
            "wecom.secret",
            "wecom.token",
            "wecom.encoding_aes_key",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not named: {err}");
        }
        // Credentials from the environment (as the operator passes them).
        let cfg = load(
            "slack:\n  enabled: true\n",
            env(&[
                ("CLAWDBOT_SLACK__signing_secret", "s3cret"),
                ("CLAWDBOT_SLACK__BOT_TOKEN", "xoxb-1"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.slack.bot_token.unwrap().expose(), "xoxb-1");
        // The operator's check leaves credentials to the environment.
        let mut c = RuntimeConfig::default();
        c.dingtalk.enabled = true;
        assert!(validate_without_credentials(&c).is_empty());
        assert!(!validate(&c).is_empty());
    }

    #[test]
    fn channel_settings_are_checked_even_when_disabled() {
        let err = load(
            "wecom:\n  encoding_aes_key: short\nfeishu:\n  api_base: ftp://x\nchannels:\n  dedupe_ttl_secs: 60\ndingtalk:\n  enabled: true\n  app_key: k\n  app_secret: s\n  reply_format: action_card\n",
            env(&[]),
        )
        .unwrap_err();
        let keys: Vec<String> = err.issues().into_iter().map(|i| i.key).collect();
        for k in [
            "wecom.encoding_aes_key",
            "feishu.api_base",
            "channels.dedupe_ttl_secs",
            "dingtalk.action_card_url",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not named: {err}");
        }
        // A robot URL holds a credential: the error never repeats it.
        let err = load(
            "dingtalk:\n  webhook_url: oapi.dingtalk.com/robot/send?access_token=TOKEN123\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("TOKEN123"), "{err}");
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_refused() {
        assert!(matches!(
            load("- a\n- b\n", env(&[])),
            Err(ConfigError::Yaml(_))
        ));
        assert!(matches!(
            load("model: [\n", env(&[])),
            Err(ConfigError::Yaml(_))
        ));
    }
}
