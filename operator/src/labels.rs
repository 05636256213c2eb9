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
/// The runtime's `/metrics` port (`server.metrics_listen`), named `metrics`
/// on the pod and the Service; never behind the Ingress.
pub const METRICS_PORT: i32 = 9090;

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

pub const REDIS_PORT: i32 = 6379;
pub const POSTGRES_PORT: i32 = 5432;

/// StatefulSet, Service, password Secret and NetworkPolicy of managed Redis.
pub fn redis_name(bot: &str) -> String {
    format!("{bot}-redis")
}

/// StatefulSet, Service, credentials Secret and NetworkPolicy of a managed
/// database; also the name of a CloudNativePG Cluster.
pub fn db_name(bot: &str) -> String {
    format!("{bot}-db")
}

/// CronJob and PersistentVolumeClaim of a managed database's backups.
pub fn db_backup_name(bot: &str) -> String {
    format!("{bot}-db-backup")
}

/// The Secret CloudNativePG writes for a Cluster's application user.
pub fn cnpg_app_secret_name(bot: &str) -> String {
    format!("{}-app", db_name(bot))
}

/// The Secret the operator maintains with the runtime's REDIS_URL and
/// DATABASE_URL for managed components.
pub fn connections_secret_name(bot: &str) -> String {
    format!("{bot}-connections")
}

/// Keys of the generated Secrets.
pub const PASSWORD_KEY: &str = "password";
pub const USERNAME_KEY: &str = "username";
pub const DATABASE_KEY: &str = "database";
pub const REDIS_URL_KEY: &str = "redis-url";
pub const DATABASE_URL_KEY: &str = "database-url";
/// Key of CloudNativePG's application Secret holding the connection URI.
pub const CNPG_URI_KEY: &str = "uri";

/// Name of the volumeClaimTemplate of managed StatefulSets; the first pod's
/// claim is `data-<statefulset>-0`.
pub const DATA_VOLUME: &str = "data";

pub fn data_claim_name(statefulset: &str) -> String {
    format!("{DATA_VOLUME}-{statefulset}-0")
}

/// Longest bot name whose managed children's names still fit: a
/// StatefulSet's pods carry a `controller-revision-hash` label of the
/// StatefulSet name plus 11 characters (at most 63), and a CronJob's name is
/// at most 52 characters.
pub const MAX_NAME_WITH_REDIS: usize = 52 - "-redis".len();
pub const MAX_NAME_WITH_DATABASE: usize = 52 - "-db-backup".len();

/// The labels that select the runtime pods (also the scale selector).
pub fn selector(bot: &str) -> BTreeMap<String, String> {
    component_selector(bot, RUNTIME)
}

/// The labels that select one component's pods.
pub fn component_selector(bot: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP.to_owned()),
        (INSTANCE_LABEL.to_owned(), bot.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// Values of the component label.
pub const RUNTIME: &str = "runtime";
pub const REDIS: &str = "redis";
pub const DATABASE: &str = "database";
pub const DB_BACKUP: &str = "database-backup";

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
