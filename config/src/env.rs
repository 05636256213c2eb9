//! Environment overrides: `CLAWDBOT_<PATH>` with `__` between levels, plus the
//! names the deployment guides use (`MODEL_ENDPOINT`, `REDIS_URL`, ...).
//!
//! Values are plain strings in the environment; the config's JSON schema says
//! what type each key has, so `CLAWDBOT_MODEL__TEMPERATURE=0.2` becomes a
//! number while `MODEL_API_KEY=123456` stays a string.

use serde_json::{Map, Value};

use crate::ConfigError;

const PREFIX: &str = "CLAWDBOT_";

/// Names from the deployment guides and the key each one sets.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("CLAWDBOT_LISTEN", "server.listen"),
    ("CLAWDBOT_METRICS_LISTEN", "server.metrics_listen"),
    ("CLAWDBOT_API_KEYS", "auth.api_keys"),
    ("MODEL_ENDPOINT", "model.endpoint"),
    ("MODEL_API_KEY", "model.api_key"),
    ("MODEL_NAME", "model.name"),
    ("MODEL_BACKEND", "model.backend"),
    ("MODEL_PATH", "model.local.path"),
    ("KNOWLEDGE_PATH", "knowledge.path"),
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
];

/// Kubernetes injects `<SERVICE>_SERVICE_*` and `<SERVICE>_PORT*` variables
/// for every Service in the namespace; a Service named `clawdbot` would
/// otherwise look like config keys.
fn is_service_link(name: &str) -> bool {
    let rest = &name[PREFIX.len()..];
    rest.starts_with("SERVICE_") || rest == "PORT" || rest.starts_with("PORT_")
}

/// One override found in the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvOverride {
    pub var: String,
    pub path: Vec<String>,
    pub raw: String,
}

/// Picks the variables that configure the runtime, in a stable order:
/// generic `CLAWDBOT_*` first, then the aliases, so the documented alias wins
/// when both are set. An alias set to the empty string counts as unset:
/// Compose's `${MODEL_ENDPOINT:-}` passes one when `.env` leaves it out, and
/// no alias has a meaningful empty value (an empty `MODEL_ENDPOINT` means
/// "no upstream", so the local model answers).
pub fn collect<I>(vars: I) -> Vec<EnvOverride>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut generic = Vec::new();
    let mut aliased = Vec::new();
    for (var, raw) in vars {
        if let Some((_, path)) = ENV_ALIASES.iter().find(|(name, _)| *name == var) {
            if raw.is_empty() {
                continue;
            }
            aliased.push(EnvOverride {
                path: path.split('.').map(str::to_owned).collect(),
                var,
                raw,
            });
        } else if var.starts_with(PREFIX) && !is_service_link(&var) {
            let path = var[PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            generic.push(EnvOverride { var, path, raw });
        }
    }
    generic.sort_by(|a, b| a.var.cmp(&b.var));
    aliased.sort_by_key(|o| ENV_ALIASES.iter().position(|(n, _)| *n == o.var));
    generic.extend(aliased);
    generic
}

/// Writes each override into `doc`, typed by `schema`.
pub fn apply(
    doc: &mut Value,
    schema: &Value,
    overrides: &[EnvOverride],
) -> Result<(), ConfigError> {
    for o in overrides {
        let key = o.path.join(".");
        let bad = |why: String| ConfigError::Invalid {
            key: key.clone(),
            why: format!("{why} (from environment variable {})", o.var),
        };
        let node = resolve_path(schema, &o.path).ok_or_else(|| bad("unknown key".to_owned()))?;
        let value = if o.var == "CLAWDBOT_API_KEYS" {
            parse_api_keys(&o.raw)
        } else {
            coerce(schema, node, &o.raw).map_err(bad)?
        };
        set_path(doc, &o.path, value).map_err(bad)?;
    }
    Ok(())
}

/// `KEY` or `KEY:admin` / `KEY:user`, comma-separated. A suffix that is not a
/// scope is part of the key.
fn parse_api_keys(raw: &str) -> Value {
    let keys = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, item)| {
            let (key, scope) = match item.rsplit_once(':') {
                Some((k, s @ ("admin" | "user"))) => (k, s),
                _ => (item, "user"),
            };
            serde_json::json!({ "key": key, "scope": scope, "name": format!("env-key-{}", i + 1) })
        })
        .collect();
    Value::Array(keys)
}

fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    // Follow `$ref` and unwrap `Option<T>` (anyOf [T, null]) to T.
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.pointer(&format!("/$defs/{name}")) {
                Some(target) => node = target,
                None => return node,
            }
            continue;
        }
        let alternatives = node.get("anyOf").or_else(|| node.get("oneOf"));
        if let Some(Value::Array(alts)) = alternatives
            && let Some(first) = alts
                .iter()
                .find(|a| a.get("type") != Some(&Value::from("null")))
        {
            node = first;
            continue;
        }
        return node;
    }
    node
}

/// The schema node for a dotted path, or `None` when no such key exists.
pub fn resolve_path<'a>(schema: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = deref(schema, schema);
    for seg in path {
        node = deref(schema, node.get("properties")?.get(seg)?);
    }
    Some(node)
}

fn schema_type(node: &Value) -> Option<&str> {
    match node.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

fn coerce(root: &Value, node: &Value, raw: &str) -> Result<Value, String> {
    match schema_type(node) {
        Some("string") | None => Ok(Value::String(raw.to_owned())),
        Some("boolean") => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Some("integer") => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Some("number") => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("expected a number, got {raw:?}")),
        Some("array") => {
            let items = node.get("items").map(|i| deref(root, i));
            if items.and_then(schema_type) == Some("string") && !raw.trim_start().starts_with('[') {
                Ok(Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                ))
            } else {
                serde_json::from_str(raw).map_err(|e| format!("expected a JSON array: {e}"))
            }
        }
        Some(_) => serde_json::from_str(raw).map_err(|e| format!("expected a JSON object: {e}")),
    }
}

fn set_path(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut node = doc;
    for seg in &path[..path.len() - 1] {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return Err(format!("cannot set a key inside the non-object `{seg}`"));
        };
        node = map.entry(seg.clone()).or_insert(Value::Null);
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    match node {
        Value::Object(map) => {
            map.insert(path[path.len() - 1].clone(), value);
            Ok(())
        }
        _ => Err("the parent key is not a mapping".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn generic_names_map_to_lowercase_paths() {
        let o = collect(vars(&[
            ("CLAWDBOT_MODEL__MAX_TOKENS", "5"),
            ("HOME", "/root"),
        ]));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].path, ["model", "max_tokens"]);
    }

    #[test]
    fn kubernetes_service_links_are_not_config() {
        let o = collect(vars(&[
            ("CLAWDBOT_PORT", "tcp://10.0.0.1:18789"),
            ("CLAWDBOT_PORT_18789_TCP_ADDR", "10.0.0.1"),
            ("CLAWDBOT_SERVICE_HOST", "10.0.0.1"),
        ]));
        assert!(o.is_empty());
    }

    #[test]
    fn aliases_come_after_generic_names_so_they_win() {
        let o = collect(vars(&[("MODEL_NAME", "b"), ("CLAWDBOT_MODEL__NAME", "a")]));
        assert_eq!(o.last().unwrap().var, "MODEL_NAME");
    }

    #[test]
    fn an_empty_alias_is_unset_but_an_empty_generic_name_is_a_value() {
        let o = collect(vars(&[
            ("MODEL_ENDPOINT", ""),
            ("REDIS_URL", ""),
            ("CLAWDBOT_MODEL__SYSTEM_PROMPT", ""),
        ]));
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].var, "CLAWDBOT_MODEL__SYSTEM_PROMPT");
        let o = collect(vars(&[
            ("MODEL_ENDPOINT", ""),
            ("CLAWDBOT_MODEL__ENDPOINT", "x"),
        ]));
        assert_eq!((o.len(), o[0].raw.as_str()), (1, "x"));
    }

    #[test]
    fn api_keys_take_an_optional_scope_suffix() {
        let v = parse_api_keys("abc, def:admin ,ghi:other,");
        assert_eq!(v[0]["key"], "abc");
        assert_eq!(v[0]["scope"], "user");
        assert_eq!(v[1]["key"], "def");
        assert_eq!(v[1]["scope"], "admin");
        assert_eq!(v[2]["key"], "ghi:other");
        assert_eq!(v.as_array().unwrap().len(), 3);
    }
}
