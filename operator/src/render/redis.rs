//! Managed Redis (`spec.redis.managed`): the official image in a
//! one-replica StatefulSet, password required, append-only file only when a
//! volume is asked for.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;

use super::stateful::{
    self, StatefulParts, empty_dir, exec_probe, generated_secret, mount, resources,
    restricted_container,
};
use crate::crd::{ClawdBot, ManagedRedis};
use crate::labels::{self, DATA_VOLUME, PASSWORD_KEY, REDIS, REDIS_PORT, RUNTIME};

/// The environment variable the password reaches the container in; the
/// arguments name it as `$(REDIS_PASSWORD)`, which the kubelet expands, so
/// the value is in neither the pod spec nor a ConfigMap.
pub const PASSWORD_ENV: &str = "REDIS_PASSWORD";

/// `redis-server` arguments. Persistence off: no RDB snapshots and no AOF,
/// everything in memory. On: an append-only file fsynced every second.
pub fn args(persistent: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "redis-server",
        "--port",
        &REDIS_PORT.to_string(),
        "--requirepass",
        &format!("$({PASSWORD_ENV})"),
        "--dir",
        "/data",
        "--save",
        "",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if persistent {
        a.extend(["--appendonly", "yes", "--appendfsync", "everysec"].map(String::from));
    } else {
        a.extend(["--appendonly", "no"].map(String::from));
    }
    a
}

pub fn statefulset(cb: &ClawdBot, r: &ManagedRedis, hash: &str) -> StatefulSet {
    let name = labels::redis_name(&cb.name_any());
    let secret = name.clone();
    // redis-cli reads the password from REDISCLI_AUTH, so the probe command
    // line carries none.
    let ping = "redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG";
    let container = Container {
        name: "redis".into(),
        image: Some(r.image().to_owned()),
        args: Some(args(r.persistence.is_some())),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            stateful::secret_env(PASSWORD_ENV, &secret, PASSWORD_KEY),
            stateful::secret_env("REDISCLI_AUTH", &secret, PASSWORD_KEY),
        ]),
        resources: Some(resources(r.resources.as_ref(), "50m", "64Mi", "256Mi")),
        readiness_probe: Some(exec_probe(ping, 5, 3, 0)),
        liveness_probe: Some(exec_probe(ping, 10, 6, 10)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount(DATA_VOLUME, "/data"), mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let mut volumes = vec![empty_dir("tmp", Some("16Mi"))];
    let claim = r
        .persistence
        .as_ref()
        .map(|p| stateful::volume_claim(cb, REDIS, p));
    if claim.is_none() {
        volumes.insert(0, empty_dir(DATA_VOLUME, None));
    }
    stateful::statefulset(
        cb,
        StatefulParts {
            name,
            component: REDIS,
            container,
            volumes,
            claim,
            when_deleted: "Retain",
            hash,
            annotations: BTreeMap::new(),
        },
    )
}

pub fn service(cb: &ClawdBot) -> Service {
    stateful::service(
        cb,
        labels::redis_name(&cb.name_any()),
        REDIS,
        "redis",
        REDIS_PORT,
    )
}

pub fn network_policy(cb: &ClawdBot) -> NetworkPolicy {
    stateful::network_policy(
        cb,
        labels::redis_name(&cb.name_any()),
        REDIS,
        REDIS_PORT,
        &[RUNTIME],
    )
}

/// The password Secret. With persistence it has no owner reference: the
/// volume outlives the ClawdBot (Retain), and so must the password its
/// data was written with.
pub fn password_secret(cb: &ClawdBot, persistent: bool, password: &str) -> Secret {
    let mut s = generated_secret(
        cb,
        labels::redis_name(&cb.name_any()),
        REDIS,
        &[(PASSWORD_KEY, password)],
    );
    if persistent {
        s.metadata.owner_references = None;
    }
    s
}

/// The runtime's REDIS_URL for managed Redis.
pub fn url(cb: &ClawdBot, password: &str) -> String {
    let bot = cb.name_any();
    let ns = cb.namespace().unwrap_or_else(|| "default".into());
    format!(
        "redis://:{}@{}.{ns}.svc:{REDIS_PORT}/0",
        super::url_escape(password),
        labels::redis_name(&bot)
    )
}
