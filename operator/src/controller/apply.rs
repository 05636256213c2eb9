//! One reconcile of a valid, unpaused ClawdBot: credentials, children in
//! dependency order (the data stores before the runtime that needs them),
//! children the spec no longer wants deleted, then the status.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use rand::Rng;
use std::time::Duration;

use super::children::{
    Applied, Known, NameConflict, apply, apply_or_delete, apply_with, child_ref, controlled_by,
    delete_if_owned,
};
use super::events::{publish_about, warn};
use super::probe::{self, Readiness};
use super::state::{self, Component, Problem, State};
use super::{Context, Error, now, patch_status};
use crate::crd::ClawdBot;
use crate::labels::{self, MANAGER};
use crate::render::{self, Children, Inputs, StatefulChildren, postgres};
use crate::status::{Dependency, Health, Observation, next_status};

/// How often a bot with an external Redis or database is looked at again:
/// its health changes without any watch event.
const EXTERNAL_RECHECK: Duration = Duration::from_secs(60);

pub async fn reconcile_children(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    reference: &ObjectReference,
) -> Result<Action, Error> {
    let bot = cb.name_any();
    ctx.children.wait_ready().await;
    let auth_secret_name = ensure_api_keys_secret(ctx, cb, ns, reference).await?;
    let st = state::prepare(ctx, cb, ns, reference).await?;
    let mut conflicts: Vec<NameConflict> = Vec::new();

    // The runtime's connection URLs, before the pods that read them. Left
    // as they are while a managed component is blocked.
    let blocked = st.redis.problem().is_some() || st.database.problem().is_some();
    if !blocked {
        let (redis_url, db_url) = state::connection_urls(cb, &st);
        let wanted = render::connections_secret(cb, redis_url, db_url);
        let name = labels::connections_secret_name(&bot);
        conflicts.extend(apply_or_delete(ctx, ns, &name, wanted.as_ref(), reference).await?);
    }
    let mut read = render::referenced_secrets(cb);
    let (digest, mut missing) = ctx.secrets.digest(ctx, ns, &read).await?;
    // CloudNativePG writes its Secret once the Cluster is up: until then
    // the bot waits (DatabaseReady), it is not broken.
    let cnpg_secret = labels::cnpg_app_secret_name(&bot);
    missing.retain(|m| *m != cnpg_secret);
    read.extend(generated_secret_names(cb));
    ctx.secrets.index(ns, &bot, read);

    let digest_of = |c: &Component| match c {
        Component::Ready { digest, .. } => digest.clone(),
        _ => String::new(),
    };
    let children = render::build(
        cb,
        &Inputs {
            secrets_digest: digest,
            default_image: ctx.default_image.clone(),
            redis_digest: digest_of(&st.redis),
            database_digest: digest_of(&st.database),
            operator_namespace: ctx.operator_namespace.clone(),
        },
    )
    .map_err(|e| Error::Build(e.to_string()))?;

    let outcome = apply_all(ctx, ns, cb, &children, &st, reference, &mut conflicts).await;
    let applied = match outcome {
        Ok(a) => a,
        Err(e) => {
            warn(ctx, reference, "ApplyFailed", &e.to_string()).await;
            let mut obs = Observation::without_children(Health::ApplyFailed(e.to_string()), now());
            obs.auth_secret_name = Some(auth_secret_name);
            patch_status(ctx, ns, cb, next_status(cb, &obs)).await?;
            return Err(e);
        }
    };
    let mut problems: Vec<Problem> = st.problems.clone();
    problems.extend(st.redis.problem().cloned());
    problems.extend(st.database.problem().cloned());
    problems.extend(conflicts.iter().map(|c| Problem {
        reason: "NameConflict",
        message: c.to_string(),
    }));
    for p in &problems {
        warn(ctx, reference, p.reason, &p.message).await;
    }
    let health = if let Some(first) = problems.first() {
        Health::Blocked(
            first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if !missing.is_empty() {
        Health::MissingSecrets(missing)
    } else {
        Health::Ok
    };

    let external = external_readiness(ctx, ns, cb, applied.deployment.as_ref()).await;
    let obs = Observation {
        health,
        paused: false,
        deployment: applied.deployment.as_ref(),
        redis: dependency(
            &st.redis,
            cb_redis_external(cb),
            applied.redis,
            &external,
            true,
        ),
        database: match applied.cnpg {
            Some(c) => Dependency::Cnpg(Some(Box::new(c))),
            None if cb
                .spec
                .database
                .as_ref()
                .is_some_and(|d| d.cloud_native_pg.is_some()) =>
            {
                Dependency::Cnpg(None)
            }
            None => dependency(
                &st.database,
                cb_db_external(cb),
                applied.database,
                &external,
                false,
            ),
        },
        auth_secret_name: Some(auth_secret_name),
        now: now(),
    };
    let status = next_status(cb, &obs);
    warn_when_state_becomes_pod_local(ctx, cb, &status, reference).await;
    patch_status(ctx, ns, cb, status).await?;
    Ok(if external.is_some() {
        Action::requeue(EXTERNAL_RECHECK)
    } else {
        Action::await_change()
    })
}

/// Several pods with pod-local state (each its own SQLite log, say) is
/// allowed, but what goes with a pod is worth one Warning Event when it
/// starts, not one per reconcile.
async fn warn_when_state_becomes_pod_local(
    ctx: &Context,
    cb: &ClawdBot,
    status: &crate::crd::ClawdBotStatus,
    reference: &ObjectReference,
) {
    let find = |conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conds
            .iter()
            .find(|c| c.type_ == "StateShared")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let Some((now, reason)) = find(&status.conditions) else {
        return;
    };
    let before = cb.status.as_ref().and_then(|s| find(&s.conditions));
    if now == "False"
        && render::desired_replicas(cb) > 1
        && before != Some((now.clone(), reason))
        && let Some(c) = status.conditions.iter().find(|c| c.type_ == "StateShared")
    {
        warn(ctx, reference, "StateNotShared", &c.message).await;
    }
}

fn cb_redis_external(cb: &ClawdBot) -> bool {
    cb.spec.redis.as_ref().is_some_and(|r| r.external.is_some())
}

fn cb_db_external(cb: &ClawdBot) -> bool {
    cb.spec
        .database
        .as_ref()
        .is_some_and(|d| d.external.is_some())
}

fn dependency(
    c: &Component,
    external: bool,
    applied: Option<StatefulSet>,
    readiness: &Option<Readiness>,
    redis: bool,
) -> Dependency {
    match c {
        Component::Blocked(p) => Dependency::Blocked(p.clone()),
        Component::Ready { .. } => Dependency::StatefulSet(applied.map(Box::new)),
        Component::Absent if external => Dependency::External(
            readiness
                .as_ref()
                .map(|r| {
                    if redis {
                        r.redis.clone()
                    } else {
                        r.database.clone()
                    }
                })
                .unwrap_or(probe::Check::Unknown("not checked".into())),
        ),
        Component::Absent => Dependency::NotUsed,
    }
}

/// Asks the runtime about the external Redis/database it uses, once a
/// runtime pod is available to answer.
async fn external_readiness(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    deployment: Option<&k8s_openapi::api::apps::v1::Deployment>,
) -> Option<Readiness> {
    if !cb_redis_external(cb) && !cb_db_external(cb) {
        return None;
    }
    let available = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if available == 0 {
        return Some(Readiness::unknown(
            "no bot-runtime pod is available to report on it yet",
        ));
    }
    Some(probe::read(&ctx.http, &ctx.probe_base(ns, &cb.name_any())).await)
}

/// Secrets the operator creates for a bot; their events map back to it.
fn generated_secret_names(cb: &ClawdBot) -> Vec<String> {
    let bot = cb.name_any();
    vec![
        labels::api_keys_secret_name(&bot),
        labels::redis_name(&bot),
        labels::db_name(&bot),
        labels::connections_secret_name(&bot),
        labels::cnpg_app_secret_name(&bot),
    ]
}

#[derive(Default)]
struct AppliedState {
    deployment: Option<k8s_openapi::api::apps::v1::Deployment>,
    redis: Option<StatefulSet>,
    database: Option<StatefulSet>,
    cnpg: Option<DynamicObject>,
}

fn done<T>(a: Applied<T>, conflicts: &mut Vec<NameConflict>) -> Option<T> {
    match a {
        Applied::Done(t) => Some(t),
        Applied::Conflict(c) => {
            conflicts.push(c);
            None
        }
    }
}

async fn apply_all(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    c: &Children,
    st: &State,
    reference: &ObjectReference,
    conflicts: &mut Vec<NameConflict>,
) -> Result<AppliedState, Error> {
    let bot = cb.name_any();
    let apis = ctx.apis();
    let mut out = AppliedState::default();
    let mut kinds = vec!["ServiceAccount", "ConfigMap", "Deployment", "Service"];
    done(
        apply(ctx, ns, &c.service_account, reference).await?,
        conflicts,
    );
    done(apply(ctx, ns, &c.config_map, reference).await?, conflicts);

    out.redis = stateful(
        ctx,
        ns,
        &labels::redis_name(&bot),
        c.redis.as_ref(),
        &st.redis,
        reference,
        conflicts,
    )
    .await?;
    out.database = stateful(
        ctx,
        ns,
        &labels::db_name(&bot),
        c.database.as_ref(),
        &st.database,
        reference,
        conflicts,
    )
    .await?;
    if c.redis.is_some() || c.database.is_some() {
        kinds.push("StatefulSet");
    }
    if apis.batch_v1 {
        backup(ctx, ns, cb, c, reference, conflicts).await?;
        if c.backup.is_some() {
            kinds.push("CronJob");
        }
    }
    if apis.cnpg {
        let ar = cnpg_resource();
        let name = labels::db_name(&bot);
        match &c.cnpg_cluster {
            Some(cluster) => {
                let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
                out.cnpg = done(
                    apply_with(ctx, ns, &ar, &api, cluster, reference).await?,
                    conflicts,
                );
                kinds.push("Cluster");
            }
            None => delete_if_owned(ctx, ns, &ar, &name, reference).await?,
        }
    }

    out.deployment = done(apply(ctx, ns, &c.deployment, reference).await?, conflicts);
    done(apply(ctx, ns, &c.service, reference).await?, conflicts);
    if apis.autoscaling_v2 {
        conflicts.extend(apply_or_delete(ctx, ns, &bot, c.autoscaler.as_ref(), reference).await?);
        if c.autoscaler.is_some() {
            kinds.push("HorizontalPodAutoscaler");
        }
    }
    if apis.policy_v1 {
        conflicts
            .extend(apply_or_delete(ctx, ns, &bot, c.disruption_budget.as_ref(), reference).await?);
        if c.disruption_budget.is_some() {
            kinds.push("PodDisruptionBudget");
        }
    }
    if apis.networking_v1 {
        conflicts
            .extend(apply_or_delete(ctx, ns, &bot, c.network_policy.as_ref(), reference).await?);
        conflicts.extend(apply_or_delete(ctx, ns, &bot, c.ingress.as_ref(), reference).await?);
        if c.network_policy.is_some() || c.redis.is_some() || c.database.is_some() {
            kinds.push("NetworkPolicy");
        }
        if c.ingress.is_some() {
            kinds.push("Ingress");
        }
    }
    ctx.set_managed(format!("{ns}/{bot}"), kinds);
    Ok(out)
}

/// A managed Redis or PostgreSQL: applied when wanted and usable; its
/// StatefulSet left as it is while blocked; deleted (with its generated
/// credentials, unless a retained volume still needs them) when not wanted.
async fn stateful(
    ctx: &Context,
    ns: &str,
    name: &str,
    wanted: Option<&StatefulChildren>,
    component: &Component,
    reference: &ObjectReference,
    conflicts: &mut Vec<NameConflict>,
) -> Result<Option<StatefulSet>, Error> {
    let networking = ctx.apis().networking_v1;
    let Some(w) = wanted else {
        delete_if_owned(
            ctx,
            ns,
            &ApiResource::erase::<StatefulSet>(&()),
            name,
            reference,
        )
        .await?;
        delete_if_owned(
            ctx,
            ns,
            &ApiResource::erase::<Service>(&()),
            name,
            reference,
        )
        .await?;
        if networking {
            delete_if_owned(
                ctx,
                ns,
                &ApiResource::erase::<NetworkPolicy>(&()),
                name,
                reference,
            )
            .await?;
        }
        delete_if_owned(ctx, ns, &ApiResource::erase::<Secret>(&()), name, reference).await?;
        return Ok(None);
    };
    done(apply(ctx, ns, &w.service, reference).await?, conflicts);
    if networking {
        done(
            apply(ctx, ns, &w.network_policy, reference).await?,
            conflicts,
        );
    }
    if let Component::Blocked(_) = component {
        return Ok(None);
    }
    Ok(done(
        apply(ctx, ns, &w.statefulset, reference).await?,
        conflicts,
    ))
}

/// The backup CronJob, and its volume: created once (a claim's spec is
/// mostly immutable), kept when backups are switched off unless it belongs
/// to the ClawdBot (deleteClaimOnDelete).
async fn backup(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    c: &Children,
    reference: &ObjectReference,
    conflicts: &mut Vec<NameConflict>,
) -> Result<(), Error> {
    let name = labels::db_backup_name(&cb.name_any());
    let claim_ar = ApiResource::erase::<PersistentVolumeClaim>(&());
    let Some((job, claim)) = &c.backup else {
        delete_if_owned(
            ctx,
            ns,
            &ApiResource::erase::<CronJob>(&()),
            &name,
            reference,
        )
        .await?;
        delete_if_owned(ctx, ns, &claim_ar, &name, reference).await?;
        return Ok(());
    };
    let exists = match ctx.children.lookup(&claim_ar, ns, &name) {
        Some(Known::Present(m)) => Some(m.metadata.clone()),
        _ => Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
            .get_metadata_opt(&name)
            .await?
            .map(|m| m.metadata),
    };
    match exists {
        Some(m) if !ours(&m, reference, &cb.name_any()) => {
            conflicts.push(NameConflict {
                kind: "PersistentVolumeClaim".into(),
                name: name.clone(),
            });
            return Ok(());
        }
        Some(_) => {}
        None => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let params = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&params, claim).await {
                Ok(created) => {
                    publish_about(
                        ctx,
                        reference,
                        Some(child_ref(&claim_ar, ns, &name, created.meta().uid.clone())),
                        EventType::Normal,
                        "Created",
                        format!("Created PersistentVolumeClaim {name} for database backups"),
                        "Create",
                    )
                    .await
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    done(apply(ctx, ns, job, reference).await?, conflicts);
    Ok(())
}

/// Controlled by this ClawdBot, or made for it and kept unowned on purpose
/// (a retained volume's claim or credentials carry its labels, no owner).
pub fn ours(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    reference: &ObjectReference,
    bot: &str,
) -> bool {
    if controlled_by(m, reference) {
        return true;
    }
    let has_controller = m
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    let l = m.labels.clone().unwrap_or_default();
    !has_controller
        && l.get(labels::INSTANCE_LABEL).map(String::as_str) == Some(bot)
        && l.get(labels::MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
}

pub fn cnpg_resource() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".into(),
        version: "v1".into(),
        api_version: postgres::CNPG_API_VERSION.into(),
        kind: "Cluster".into(),
        plural: "clusters".into(),
    }
}

/// Creates the generated API key Secret once, when the spec names none.
async fn ensure_api_keys_secret(
    ctx: &Context,
    cb: &ClawdBot,
    ns: &str,
    reference: &ObjectReference,
) -> Result<String, Error> {
    let ar = ApiResource::erase::<Secret>(&());
    let generated = labels::api_keys_secret_name(&cb.name_any());
    if let Some(r) = &cb.spec.auth.api_keys_secret_ref {
        delete_if_owned(ctx, ns, &ar, &generated, reference).await?;
        return Ok(r.name.clone());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let exists = match ctx.children.lookup(&ar, ns, &generated) {
        Some(Known::Present(_)) => true,
        _ => api.get_metadata_opt(&generated).await?.is_some(),
    };
    if !exists {
        let key = hex::encode(rand::rng().random::<[u8; 24]>());
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        match api
            .create(&params, &render::api_keys_secret(cb, &key))
            .await
        {
            Ok(created) => {
                publish_about(
                    ctx,
                    reference,
                    Some(child_ref(&ar, ns, &generated, created.metadata.uid.clone())),
                    EventType::Normal,
                    "Created",
                    format!("Created Secret {generated} with a generated API key"),
                    "Create",
                )
                .await
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(generated)
}
