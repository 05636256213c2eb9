//! Status and conditions, computed from what was observed. Pure, and stable:
//! a condition whose value did not change keeps its lastTransitionTime, so
//! writing status never retriggers reconciliation by itself.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::crd::{ChannelsSpec, ClawdBot, ClawdBotSpec, ClawdBotStatus};
use crate::labels;
use crate::render::{DRAIN_DEADLINE_SECS, desired_replicas};

/// What the reconcile found.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Ok,
    /// The spec is invalid (or unreadable): `field: message` lines.
    Invalid(String),
    /// Referenced Secrets that do not exist.
    MissingSecrets(Vec<String>),
    /// Applying a child failed.
    ApplyFailed(String),
    /// Something in the cluster keeps part of the spec from being applied:
    /// the reason (NameConflict, CredentialsLost, ...) and what to do.
    Blocked(&'static str, String),
}

/// Why part of the spec is left as it is this time (Degraded).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// What bot-runtime's /health/ready said about a dependency it uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Ok,
    Down(String),
    /// The runtime could not be asked (no available pod, unreachable).
    Unknown(String),
}

/// A Redis or database as the status judges it.
#[derive(Debug, Clone, PartialEq)]
pub enum Dependency {
    /// Not asked for: in-memory sessions, or SQLite in the pod.
    NotUsed,
    /// Managed by the operator: the StatefulSet as last applied.
    StatefulSet(Option<Box<StatefulSet>>),
    /// A CloudNativePG Cluster as last applied.
    Cnpg(Option<Box<DynamicObject>>),
    /// Run elsewhere: what the runtime's /health/ready says of it.
    External(Check),
    /// Left as it is this time.
    Blocked(Problem),
}

/// `spec.monitoring` as the status judges it (MonitoringReady).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Monitoring {
    /// Not looked at this time: the condition is left as it was.
    #[default]
    NotChecked,
    /// Not asked for: no condition.
    Off,
    /// ServiceMonitor and PrometheusRule applied.
    Applied,
    /// Asked for, but `monitoring.coreos.com/v1` is not served.
    ApiMissing,
    /// One of them has a name someone else's object holds.
    Conflict,
}

pub struct Observation<'a> {
    pub health: Health,
    pub paused: bool,
    pub deployment: Option<&'a Deployment>,
    pub redis: Dependency,
    pub database: Dependency,
    pub auth_secret_name: Option<String>,
    pub monitoring: Monitoring,
    pub now: Time,
}

impl Observation<'_> {
    /// What is known of a bot whose children were not looked at.
    pub fn without_children(health: Health, now: Time) -> Self {
        Observation {
            health,
            paused: false,
            deployment: None,
            redis: Dependency::NotUsed,
            database: Dependency::NotUsed,
            auth_secret_name: None,
            monitoring: Monitoring::NotChecked,
            now,
        }
    }
}

/// kubectl's rollout rule: the Deployment controller saw the current spec,
/// every wanted pod runs the new template, no old pod is left, and every
/// new pod is available.
pub fn rolled_out(d: &Deployment, desired: i32) -> bool {
    let Some(s) = &d.status else {
        return false;
    };
    let updated = s.updated_replicas.unwrap_or(0);
    s.observed_generation >= d.metadata.generation
        && updated >= desired
        && s.replicas.unwrap_or(0) <= updated
        && s.available_replicas.unwrap_or(0) >= updated
}

/// A one-replica StatefulSet whose pod runs the current revision and is ready.
fn statefulset_ready(s: &StatefulSet) -> Result<String, String> {
    let st = s.status.clone().unwrap_or_default();
    if st.observed_generation < s.metadata.generation {
        return Err("the StatefulSet controller has not seen the latest spec yet".into());
    }
    if st.update_revision.is_some() && st.current_revision != st.update_revision {
        return Err("its pod is being replaced with the new revision".into());
    }
    if st.ready_replicas.unwrap_or(0) < 1 {
        return Err("its pod is not ready yet".into());
    }
    Ok("its pod is ready".into())
}

fn cnpg_ready(c: &DynamicObject) -> Result<String, String> {
    let want = c.data["spec"]["instances"].as_i64().unwrap_or(1);
    let ready = c.data["status"]["readyInstances"].as_i64().unwrap_or(0);
    let phase = c.data["status"]["phase"].as_str().unwrap_or("unknown");
    if ready >= want {
        Ok(format!("{ready}/{want} instances ready ({phase})"))
    } else {
        Err(format!("{ready}/{want} instances ready ({phase})"))
    }
}

/// `(status, reason, message)` of RedisReady or DatabaseReady; status None
/// is Unknown.
fn dependency_condition(
    d: &Dependency,
    what: &str,
    child: &str,
    not_used: (&'static str, &str),
) -> (Option<bool>, &'static str, String) {
    match d {
        Dependency::NotUsed => (Some(true), not_used.0, not_used.1.to_owned()),
        Dependency::StatefulSet(None) => (
            Some(false),
            "Creating",
            format!("the StatefulSet {child} does not exist yet"),
        ),
        Dependency::StatefulSet(Some(s)) => match statefulset_ready(s) {
            Ok(m) => (
                Some(true),
                "StatefulSetReady",
                format!("{what} {child}: {m}"),
            ),
            Err(m) => (
                Some(false),
                "StatefulSetNotReady",
                format!("{what} {child}: {m}"),
            ),
        },
        Dependency::Cnpg(None) => (
            Some(false),
            "ClusterMissing",
            format!("the CloudNativePG Cluster {child} is not applied"),
        ),
        Dependency::Cnpg(Some(c)) => match cnpg_ready(c) {
            Ok(m) => (
                Some(true),
                "ClusterReady",
                format!("CloudNativePG Cluster {child}: {m}"),
            ),
            Err(m) => (
                Some(false),
                "ClusterNotReady",
                format!("CloudNativePG Cluster {child}: {m}"),
            ),
        },
        Dependency::External(Check::Ok) => (
            Some(true),
            "ExternalReachable",
            format!("bot-runtime reports the external {what} ok"),
        ),
        Dependency::External(Check::Down(why)) => (
            Some(false),
            "ExternalUnreachable",
            format!("bot-runtime cannot use the external {what}: {why}"),
        ),
        Dependency::External(Check::Unknown(why)) => (
            None,
            "ExternalUnknown",
            format!("the external {what} was not checked: {why}"),
        ),
        Dependency::Blocked(p) => (Some(false), p.reason, p.message.clone()),
    }
}

/// MonitoringReady's reason when the Prometheus Operator's API is absent.
pub const PROMETHEUS_OPERATOR_MISSING: &str = "PrometheusOperatorMissing";

pub fn next_status(cb: &ClawdBot, obs: &Observation) -> ClawdBotStatus {
    let prev = cb.status.clone().unwrap_or_default();
    let generation = cb.metadata.generation;
    let name = cb.name_any();
    let ns = cb.namespace().unwrap_or_else(|| "default".into());
    let mut conditions = prev.conditions.clone();
    let mut set = |type_: &str, ok: Option<bool>, reason: &str, message: String| {
        upsert(
            &mut conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            &obs.now,
        );
    };

    let dep = obs
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let desired = desired_replicas(cb);
    let ready = dep.ready_replicas.unwrap_or(0);
    let updated = dep.updated_replicas.unwrap_or(0);
    let available = dep.available_replicas.unwrap_or(0);
    let rolled_out = obs.deployment.is_some_and(|d| rolled_out(d, desired));

    match &obs.health {
        Health::Ok => set(
            "Degraded",
            Some(false),
            "AsExpected",
            "all children applied".into(),
        ),
        Health::Invalid(msg) => set("Degraded", Some(true), "InvalidSpec", msg.clone()),
        Health::MissingSecrets(names) => set(
            "Degraded",
            Some(true),
            "SecretNotFound",
            format!("referenced Secret(s) not found: {}", names.join(", ")),
        ),
        Health::ApplyFailed(msg) => set("Degraded", Some(true), "ApplyFailed", msg.clone()),
        Health::Blocked(reason, msg) => set("Degraded", Some(true), reason, msg.clone()),
    }
    if obs.paused {
        set(
            "Paused",
            Some(true),
            "Paused",
            "spec.paused is true: the operator makes no changes".into(),
        );
    } else {
        set(
            "Paused",
            Some(false),
            "Reconciling",
            "the operator reconciles this bot".into(),
        );
    }
    let healthy = obs.health == Health::Ok;
    if obs.deployment.is_none() {
        set(
            "Progressing",
            Some(!matches!(obs.health, Health::Invalid(_))),
            "Creating",
            "the Deployment does not exist yet".into(),
        );
    } else if rolled_out {
        set(
            "Progressing",
            Some(false),
            "RolloutComplete",
            format!("{updated}/{desired} pods updated and available"),
        );
    } else {
        let old = dep.replicas.unwrap_or(0) - updated;
        set(
            "Progressing",
            Some(true),
            "RollingOut",
            format!(
                "{updated}/{desired} pods updated, {available} available{}",
                if old > 0 {
                    format!(", {old} old pod(s) still running")
                } else {
                    String::new()
                }
            ),
        );
    }
    let runtime_ready = obs.deployment.is_some() && rolled_out;
    if obs.deployment.is_none() {
        set(
            "RuntimeReady",
            Some(false),
            "Creating",
            format!("the Deployment {name} does not exist yet"),
        );
    } else if rolled_out {
        set(
            "RuntimeReady",
            Some(true),
            "RolloutComplete",
            format!("bot-runtime: {available}/{desired} pods of the current spec available"),
        );
    } else {
        set(
            "RuntimeReady",
            Some(false),
            "RollingOut",
            format!("bot-runtime: {updated}/{desired} pods updated, {available} available"),
        );
    }
    let (redis_ok, r_reason, r_msg) = dependency_condition(
        &obs.redis,
        "Redis",
        &labels::redis_name(&name),
        ("InMemory", "not used: sessions live in the pod's memory"),
    );
    set("RedisReady", redis_ok, r_reason, r_msg);
    let (db_ok, d_reason, d_msg) = dependency_condition(
        &obs.database,
        "database",
        &labels::db_name(&name),
        (
            "SQLite",
            "not used: conversation logs go to SQLite in the pod's scratch volume",
        ),
    );
    set("DatabaseReady", db_ok, d_reason, d_msg);
    let waiting: Vec<&str> = [
        (!runtime_ready).then_some("RuntimeReady"),
        (redis_ok != Some(true)).then_some("RedisReady"),
        (db_ok != Some(true)).then_some("DatabaseReady"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !healthy {
        set(
            "Ready",
            Some(false),
            "Degraded",
            "see the Degraded condition".into(),
        );
    } else if waiting.is_empty() {
        set(
            "Ready",
            Some(true),
            "Available",
            format!("{ready}/{desired} pods ready; every component ready"),
        );
    } else {
        set(
            "Ready",
            Some(false),
            "NotAvailable",
            format!(
                "waiting for {}; {ready}/{desired} bot-runtime pods ready",
                waiting.join(", ")
            ),
        );
    }

    let (shared, reason, message) = state_placement(&cb.spec);
    set("StateShared", Some(shared), reason, message);
    match obs.monitoring {
        Monitoring::NotChecked => {}
        Monitoring::Off => conditions.retain(|c| c.type_ != "MonitoringReady"),
        Monitoring::Applied => set(
            "MonitoringReady",
            Some(true),
            "Applied",
            format!("ServiceMonitor and PrometheusRule {name} applied"),
        ),
        Monitoring::ApiMissing => set(
            "MonitoringReady",
            Some(false),
            PROMETHEUS_OPERATOR_MISSING,
            format!(
                "{} (ServiceMonitor, PrometheusRule) is not served by this cluster: install \
                 the Prometheus Operator's CRDs; the objects are created once they are",
                crate::controller::MONITORING_V1
            ),
        ),
        Monitoring::Conflict => set(
            "MonitoringReady",
            Some(false),
            "NameConflict",
            "see the Degraded condition".into(),
        ),
    }

    ClawdBotStatus {
        observed_generation: generation,
        conditions,
        replicas: obs.deployment.map(|_| dep.replicas.unwrap_or(0)),
        ready_replicas: obs.deployment.map(|_| ready),
        selector: Some(labels::selector_string(&name)),
        endpoint: Some(format!("http://{name}.{ns}.svc:{}", labels::HTTP_PORT)),
        auth_secret_name: obs.auth_secret_name.clone().or(prev.auth_secret_name),
    }
}

/// The `StateShared` condition: `(shared, reason, message)`. Advisory, not
/// an error: a bot on pod-local state works, but that state goes with the
/// pod and is not seen by the other replicas.
pub fn state_placement(spec: &ClawdBotSpec) -> (bool, &'static str, String) {
    let channels = channels_on(&spec.channels);
    match (&spec.redis, &spec.database) {
        (Some(_), Some(_)) => (
            true,
            "Shared",
            format!(
                "chat sessions{} are in Redis and conversation logs in the database, shared by every replica",
                if channels { " and IM deliveries" } else { "" },
            ),
        ),
        (Some(_), None) => (
            false,
            "LogsPodLocal",
            format!(
                "chat sessions{} are in Redis, shared by every replica; conversation logs stay in \
                 each pod's scratch volume (SQLite), lost with the pod, until spec.database is set",
                if channels { " and IM deliveries" } else { "" },
            ),
        ),
        (None, Some(_)) => (
            false,
            "SessionsPodLocal",
            format!(
                "spec.redis is unset: chat sessions live in each pod's memory (lost with the pod, \
                 not seen by other replicas){}; set spec.redis to share them",
                if channels {
                    "; IM deliveries are in the database"
                } else {
                    ""
                }
            ),
        ),
        (None, None) => (
            false,
            "PodLocal",
            format!(
                "spec.redis and spec.database are unset: chat sessions live in each pod's memory \
                 and conversation logs{} in its scratch volume, lost with the pod and not seen by \
                 other replicas; set spec.redis (and spec.database for logs)",
                if channels {
                    format!(
                        " and IM deliveries (those unanswered at shutdown get the \
                         {DRAIN_DEADLINE_SECS} s drain, the rest are lost)"
                    )
                } else {
                    String::new()
                }
            ),
        ),
    }
}

fn channels_on(c: &ChannelsSpec) -> bool {
    c.dingtalk.as_ref().is_some_and(|x| x.enabled)
        || c.feishu.as_ref().is_some_and(|x| x.enabled)
        || c.wecom.as_ref().is_some_and(|x| x.enabled)
        || c.slack.as_ref().is_some_and(|x| x.enabled)
}

fn upsert(
    conds: &mut Vec<Condition>,
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = match ok {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
    conds.sort_by_key(|c| order(&c.type_));
}

fn order(t: &str) -> usize {
    [
        "Ready",
        "Progressing",
        "Degraded",
        "Paused",
        "RuntimeReady",
        "RedisReady",
        "DatabaseReady",
        "StateShared",
        "MonitoringReady",
    ]
    .iter()
    .position(|x| *x == t)
    .unwrap_or(usize::MAX)
}
