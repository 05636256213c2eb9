//! `status::next_status`: the conditions a ClawdBot's status carries, from
//! what a reconcile observed (Deployment rollout, managed or external Redis
//! and database, problems found), and their stability.

mod common;

use common::{bot, key, secret, with};

use clawdbot_operator::crd::{
    AutoscalingSpec, BasicChannel, ClawdBot, ClawdBotSpec, ClawdBotStatus, DatabaseSpec,
    ExternalRef, ManagedRedis, RedisSpec,
};
use clawdbot_operator::status::{
    Check, Dependency, Health, Monitoring, Observation, Problem, next_status,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
        available_replicas: Some(ready),
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
        redis: Dependency::NotUsed,
        database: Dependency::NotUsed,
        auth_secret_name: None,
        monitoring: Monitoring::NotChecked,
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
        [
            "Ready",
            "Progressing",
            "Degraded",
            "Paused",
            "RuntimeReady",
            "RedisReady",
            "DatabaseReady",
            "StateShared"
        ]
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
        enabled: true,
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
fn monitoring_ready_is_advisory_and_goes_with_the_spec() {
    let cb = bot_with_replicas(Some(1));
    let dep = deployment(4, 4, 1, 1, 1);
    let with = |cb: &ClawdBot, m: Monitoring| {
        let mut obs = observe(Health::Ok, false, Some(&dep), 0);
        obs.monitoring = m;
        next_status(cb, &obs)
    };
    let missing = with(&cb, Monitoring::ApiMissing);
    assert_eq!(is(&missing, "MonitoringReady"), "False");
    assert_eq!(
        cond(&missing, "MonitoringReady").reason,
        "PrometheusOperatorMissing"
    );
    assert_eq!(is(&missing, "Ready"), "True", "not held back by monitoring");
    assert_eq!(is(&missing, "Degraded"), "False");
    assert_eq!(
        missing.conditions.last().map(|c| c.type_.as_str()),
        Some("MonitoringReady")
    );
    let mut cb2 = cb.clone();
    cb2.status = Some(missing);
    // Not looked at (a paused or invalid bot): left as it was.
    let kept = with(&cb2, Monitoring::NotChecked);
    assert_eq!(
        cond(&kept, "MonitoringReady").reason,
        "PrometheusOperatorMissing"
    );
    let applied = with(&cb2, Monitoring::Applied);
    assert_eq!(is(&applied, "MonitoringReady"), "True");
    assert_eq!(cond(&applied, "MonitoringReady").reason, "Applied");
    let conflict = with(&cb2, Monitoring::Conflict);
    assert_eq!(cond(&conflict, "MonitoringReady").reason, "NameConflict");
    // Switched off: the condition goes.
    let off = with(&cb2, Monitoring::Off);
    assert!(off.conditions.iter().all(|c| c.type_ != "MonitoringReady"));
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
            external: Some(ExternalRef {
                url_secret_ref: key("db", "url"),
            }),
            ..DatabaseSpec::default()
        });
    });
    assert_eq!(is(&s, "StateShared"), "False");
    assert_eq!(cond(&s, "StateShared").reason, "SessionsPodLocal");
    let m = &cond(&s, "StateShared").message;
    assert!(m.contains("IM deliveries are in the database"), "{m}");

    let s = status(&|sp| {
        slack_on(sp);
        sp.redis = Some(RedisSpec {
            external: Some(ExternalRef {
                url_secret_ref: key("redis", "url"),
            }),
            ..RedisSpec::default()
        });
    });
    assert_eq!(is(&s, "StateShared"), "False", "logs are still pod-local");
    assert_eq!(cond(&s, "StateShared").reason, "LogsPodLocal");
    let m = &cond(&s, "StateShared").message;
    assert!(m.contains("sessions and IM deliveries"), "{m}");
    assert!(m.contains("until spec.database is set"), "{m}");

    let s = status(&|sp| {
        sp.redis = Some(RedisSpec {
            managed: Some(Default::default()),
            ..RedisSpec::default()
        });
        sp.database = Some(DatabaseSpec {
            managed: Some(Default::default()),
            ..DatabaseSpec::default()
        });
    });
    assert_eq!(is(&s, "StateShared"), "True");
    assert_eq!(cond(&s, "StateShared").reason, "Shared");
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
fn never_ready_while_old_pods_are_the_ready_ones() {
    // kubectl's rule: 3 wanted, a surge pod of the old template still runs
    // (4 pods, 3 updated), 3 ready of which one old. The old rule
    // (updated >= desired && ready >= desired) called this Ready.
    let cb = bot_with_replicas(Some(3));
    let mut dep = deployment(2, 2, 4, 3, 3);
    let s = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    assert_eq!(is(&s, "Ready"), "False");
    assert_eq!(is(&s, "RuntimeReady"), "False");
    assert_eq!(cond(&s, "Progressing").reason, "RollingOut");
    assert!(
        cond(&s, "Progressing").message.contains("1 old pod"),
        "{}",
        cond(&s, "Progressing").message
    );
    // New pods updated and ready but not yet available (minReadySeconds).
    dep = deployment(2, 2, 3, 3, 3);
    dep.status.as_mut().unwrap().available_replicas = Some(2);
    let s = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    assert_eq!(is(&s, "Ready"), "False");
    // Done: the old pod is gone and every new one is available.
    let dep = deployment(2, 2, 3, 3, 3);
    let s = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    assert_eq!(is(&s, "Ready"), "True");
    assert_eq!(cond(&s, "Progressing").reason, "RolloutComplete");
}

fn statefulset(
    generation: i64,
    observed: i64,
    ready: i32,
    current: &str,
    update: &str,
) -> StatefulSet {
    let mut s = StatefulSet::default();
    s.metadata.generation = Some(generation);
    s.status = Some(StatefulSetStatus {
        observed_generation: Some(observed),
        replicas: 1,
        ready_replicas: Some(ready),
        current_revision: Some(current.into()),
        update_revision: Some(update.into()),
        ..StatefulSetStatus::default()
    });
    s
}

fn with_deps(redis: Dependency, database: Dependency) -> ClawdBotStatus {
    let cb = bot_with_replicas(Some(1));
    let dep = deployment(1, 1, 1, 1, 1);
    let mut obs = observe(Health::Ok, false, Some(&dep), 0);
    obs.redis = redis;
    obs.database = database;
    next_status(&cb, &obs)
}

#[test]
fn component_conditions_and_ready_needs_every_one() {
    let s = with_deps(Dependency::NotUsed, Dependency::NotUsed);
    assert_eq!(is(&s, "RuntimeReady"), "True");
    assert_eq!(cond(&s, "RedisReady").reason, "InMemory");
    assert_eq!(cond(&s, "DatabaseReady").reason, "SQLite");
    assert_eq!(is(&s, "Ready"), "True");

    let ready = Box::new(statefulset(1, 1, 1, "r1", "r1"));
    let s = with_deps(
        Dependency::StatefulSet(Some(ready.clone())),
        Dependency::StatefulSet(Some(ready.clone())),
    );
    assert_eq!(cond(&s, "RedisReady").reason, "StatefulSetReady");
    assert!(cond(&s, "RedisReady").message.contains("bot-redis"));
    assert!(cond(&s, "DatabaseReady").message.contains("bot-db"));
    assert_eq!(is(&s, "Ready"), "True");

    for (why, sts) in [
        ("pod not ready", statefulset(1, 1, 0, "r1", "r1")),
        ("not observed", statefulset(2, 1, 1, "r1", "r1")),
        ("being replaced", statefulset(1, 1, 1, "r1", "r2")),
    ] {
        let s = with_deps(
            Dependency::StatefulSet(Some(Box::new(sts))),
            Dependency::NotUsed,
        );
        assert_eq!(is(&s, "RedisReady"), "False", "{why}");
        assert_eq!(
            cond(&s, "RedisReady").reason,
            "StatefulSetNotReady",
            "{why}"
        );
        assert_eq!(is(&s, "Ready"), "False", "{why}");
        assert_eq!(cond(&s, "Ready").reason, "NotAvailable");
        assert!(cond(&s, "Ready").message.contains("RedisReady"), "{why}");
        assert_eq!(
            is(&s, "Degraded"),
            "False",
            "{why}: waiting is not degraded"
        );
    }
    let s = with_deps(Dependency::NotUsed, Dependency::StatefulSet(None));
    assert_eq!(cond(&s, "DatabaseReady").reason, "Creating");
    assert_eq!(is(&s, "Ready"), "False");
}

#[test]
fn external_components_follow_the_runtime_report() {
    let s = with_deps(
        Dependency::External(Check::Ok),
        Dependency::External(Check::Ok),
    );
    assert_eq!(cond(&s, "RedisReady").reason, "ExternalReachable");
    assert_eq!(is(&s, "Ready"), "True");
    let s = with_deps(
        Dependency::External(Check::Down("connection refused".into())),
        Dependency::External(Check::Ok),
    );
    assert_eq!(is(&s, "RedisReady"), "False");
    assert!(
        cond(&s, "RedisReady")
            .message
            .contains("connection refused")
    );
    assert_eq!(is(&s, "Ready"), "False");
    let s = with_deps(
        Dependency::External(Check::Ok),
        Dependency::External(Check::Unknown("no pod".into())),
    );
    assert_eq!(cond(&s, "DatabaseReady").status, "Unknown");
    assert_eq!(is(&s, "Ready"), "False");
}

#[test]
fn cloudnativepg_clusters_are_judged_by_ready_instances() {
    let cluster = |ready: i64| {
        let v = serde_json::json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "bot-db"}, "spec": {"instances": 3},
            "status": {"readyInstances": ready, "phase": "Cluster in healthy state"}});
        Box::new(serde_json::from_value::<kube::api::DynamicObject>(v).unwrap())
    };
    let s = with_deps(Dependency::NotUsed, Dependency::Cnpg(Some(cluster(2))));
    assert_eq!(cond(&s, "DatabaseReady").reason, "ClusterNotReady");
    assert!(cond(&s, "DatabaseReady").message.contains("2/3"));
    let s = with_deps(Dependency::NotUsed, Dependency::Cnpg(Some(cluster(3))));
    assert_eq!(cond(&s, "DatabaseReady").reason, "ClusterReady");
    assert_eq!(is(&s, "Ready"), "True");
}

#[test]
fn blocked_components_make_the_bot_degraded_with_the_reason() {
    let p = Problem {
        reason: "CredentialsLost",
        message: "Secret bot-db is gone but volume data-bot-db-0 holds data".into(),
    };
    let cb = bot_with_replicas(Some(1));
    let dep = deployment(1, 1, 1, 1, 1);
    let mut obs = observe(
        Health::Blocked(p.reason, p.message.clone()),
        false,
        Some(&dep),
        0,
    );
    obs.database = Dependency::Blocked(p.clone());
    let s = next_status(&cb, &obs);
    assert_eq!(is(&s, "Degraded"), "True");
    assert_eq!(cond(&s, "Degraded").reason, "CredentialsLost");
    assert_eq!(cond(&s, "DatabaseReady").reason, "CredentialsLost");
    assert_eq!(is(&s, "Ready"), "False");
    assert_eq!(cond(&s, "Ready").reason, "Degraded");
}

#[test]
fn a_status_field_that_became_empty_is_cleared_by_the_patch() {
    let cb = bot_with_replicas(Some(1));
    let dep = deployment(1, 1, 1, 1, 1);
    let before = next_status(&cb, &observe(Health::Ok, false, Some(&dep), 0));
    assert!(before.replicas.is_some());
    // The Deployment went away: replicas and readyReplicas are no longer known.
    let after = next_status(&cb, &observe(Health::Ok, false, None, 1));
    assert!(after.replicas.is_none());
    let patch = clawdbot_operator::controller::status_patch(Some(&before), &after);
    assert_eq!(patch["replicas"], serde_json::Value::Null);
    assert!(patch.as_object().unwrap().contains_key("replicas"));
    assert!(patch.as_object().unwrap().contains_key("readyReplicas"));
    // A merge patch applied to the old status gives exactly the new one.
    let mut stored = serde_json::to_value(&before).unwrap();
    json_merge(&mut stored, &patch);
    assert_eq!(stored, serde_json::to_value(&after).unwrap());
}

/// RFC 7386 JSON merge patch.
fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Default::default());
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

#[test]
fn redis_spec_shapes_are_read_for_state_shared() {
    let managed = bot(with(|s| {
        s.redis = Some(RedisSpec {
            managed: Some(ManagedRedis::default()),
            ..RedisSpec::default()
        });
        s.autoscaling = Some(AutoscalingSpec {
            enabled: true,
            max_replicas: 3,
            ..AutoscalingSpec::default()
        });
    }));
    let dep = deployment(1, 1, 1, 1, 1);
    let s = next_status(&managed, &observe(Health::Ok, false, Some(&dep), 0));
    assert_eq!(cond(&s, "StateShared").reason, "LogsPodLocal");
}
