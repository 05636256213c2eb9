//! Names and labels of a ClawdBot's children. Later features and users
//! select on these, so they are part of the API.

use std::collections::BTreeMap;

pub const MANAGER: &str = "clawdbot-operator";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const CONFIG_HASH_ANNOTATION: &str = "clawdbot.io/config-hash";
pub const APP: &str = "clawdbot";
pub const HTTP_PORT: i32 = 18789;

/// Selects every child the operator manages, of any ClawdBot.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=clawdbot-operator";

pub fn config_map_name(bot: &str) -> String {
    format!("{bot}-config")
}

pub fn api_keys_secret_name(bot: &str) -> String {
    format!("{bot}-api-keys")
}

/// Key of the generated API key Secret.
pub const API_KEYS_KEY: &str = "api-keys";

/// The labels that select the runtime pods (also the scale selector).
pub fn selector(bot: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP.to_owned()),
        (INSTANCE_LABEL.to_owned(), bot.to_owned()),
        (COMPONENT_LABEL.to_owned(), "runtime".to_owned()),
    ])
}

pub fn selector_string(bot: &str) -> String {
    selector(bot)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of every child of one bot.
pub fn labels(bot: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP.to_owned()),
        (INSTANCE_LABEL.to_owned(), bot.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
    ])
}

/// Selects the children of one bot.
pub fn children_selector(bot: &str) -> String {
    format!("{INSTANCE_LABEL}={bot},{MANAGED_SELECTOR}")
}
