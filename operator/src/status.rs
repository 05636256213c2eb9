//! Status and conditions, computed from what was observed. Pure, and stable:
//! a condition whose value did not change keeps its lastTransitionTime, so
//! writing status never retriggers reconciliation by itself.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

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
}

pub struct Observation<'a> {
    pub health: Health,
    pub paused: bool,
    pub deployment: Option<&'a Deployment>,
    pub auth_secret_name: Option<String>,
    pub now: Time,
}

pub fn next_status(cb: &ClawdBot, obs: &Observation) -> ClawdBotStatus {
    let prev = cb.status.clone().unwrap_or_default();
    let generation = cb.metadata.generation;
    let name = cb.name_any();
    let ns = cb.namespace().unwrap_or_else(|| "default".into());
    let mut conditions = prev.conditions.clone();
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
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
    let dep_current = obs.deployment.is_some_and(|d| {
        d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation
    });
    let rolled_out =
        obs.deployment.is_some() && dep_current && updated >= desired && ready >= desired;

    match &obs.health {
        Health::Ok => set(
            "Degraded",
            false,
            "AsExpected",
            "all children applied".into(),
        ),
        Health::Invalid(msg) => set("Degraded", true, "InvalidSpec", msg.clone()),
        Health::MissingSecrets(names) => set(
            "Degraded",
            true,
            "SecretNotFound",
            format!("referenced Secret(s) not found: {}", names.join(", ")),
        ),
        Health::ApplyFailed(msg) => set("Degraded", true, "ApplyFailed", msg.clone()),
    }
    if obs.paused {
        set(
            "Paused",
            true,
            "Paused",
            "spec.paused is true: the operator makes no changes".into(),
        );
    } else {
        set(
            "Paused",
            false,
            "Reconciling",
            "the operator reconciles this bot".into(),
        );
    }
    let healthy = obs.health == Health::Ok;
    if obs.deployment.is_none() {
        set(
            "Progressing",
            !matches!(obs.health, Health::Invalid(_)),
            "Creating",
            "the Deployment does not exist yet".into(),
        );
    } else if rolled_out {
        set(
            "Progressing",
            false,
            "RolloutComplete",
            format!("{ready}/{desired} pods updated and ready"),
        );
    } else {
        set(
            "Progressing",
            true,
            "RollingOut",
            format!("{updated}/{desired} pods updated, {ready} ready"),
        );
    }
    if healthy && rolled_out {
        set(
            "Ready",
            true,
            "Available",
            format!("{ready}/{desired} pods ready"),
        );
    } else if !healthy {
        set(
            "Ready",
            false,
            "Degraded",
            "see the Degraded condition".into(),
        );
    } else {
        set(
            "Ready",
            false,
            "NotAvailable",
            format!("{ready}/{desired} pods ready"),
        );
    }

    let (shared, reason, message) = state_placement(&cb.spec);
    set("StateShared", shared, reason, message);

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
        (Some(_), db) => (
            true,
            "Redis",
            format!(
                "chat sessions{} are in Redis, shared by every replica{}",
                if channels { " and IM deliveries" } else { "" },
                if db.is_none() {
                    "; conversation logs stay in each pod's scratch volume until spec.database is set"
                } else {
                    ""
                }
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
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if ok { "True" } else { "False" };
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
    ["Ready", "Progressing", "Degraded", "Paused", "StateShared"]
        .iter()
        .position(|x| *x == t)
        .unwrap_or(9)
}
