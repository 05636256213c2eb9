//! Applying a bot's children in dependency order (the data stores before
//! the runtime that needs them), and deleting those the spec no longer wants.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Resource, ResourceExt};

use super::children::{
    Applied, NameConflict, apply, apply_or_delete, apply_with, child_ref, controlled_by,
    delete_if_owned, metadata_of,
};
use super::events::{Change, Owner};
use super::state::{Component, State};
use super::{Context, Error};
use crate::crd::ClawdBot;
use crate::labels::{self, MANAGER};
use crate::render::{Children, StatefulChildren, postgres};
use crate::status::Monitoring;

#[derive(Default)]
pub struct AppliedState {
    pub deployment: Option<Deployment>,
    pub redis: Option<StatefulSet>,
    pub database: Option<StatefulSet>,
    pub cnpg: Option<DynamicObject>,
    pub monitoring: Monitoring,
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

/// `hold_runtime`: leave the Deployment as it is (new pods would not start).
#[allow(clippy::too_many_arguments)]
pub async fn apply_all(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    c: &Children,
    st: &State,
    hold_runtime: bool,
    owner: &Owner<'_>,
    conflicts: &mut Vec<NameConflict>,
) -> Result<AppliedState, Error> {
    let bot = cb.name_any();
    let apis = ctx.apis();
    let mut out = AppliedState::default();
    let mut kinds = vec!["ServiceAccount", "ConfigMap", "Deployment", "Service"];
    done(apply(ctx, ns, &c.service_account, owner).await?, conflicts);
    done(apply(ctx, ns, &c.config_map, owner).await?, conflicts);

    out.redis = stateful(
        ctx,
        ns,
        &labels::redis_name(&bot),
        c.redis.as_ref(),
        &st.redis,
        owner,
        conflicts,
    )
    .await?;
    out.database = stateful(
        ctx,
        ns,
        &labels::db_name(&bot),
        c.database.as_ref(),
        &st.database,
        owner,
        conflicts,
    )
    .await?;
    if c.redis.is_some() || c.database.is_some() {
        kinds.push("StatefulSet");
    }
    if apis.batch_v1 {
        backup(ctx, ns, cb, c, owner, conflicts).await?;
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
                    apply_with(ctx, ns, &ar, &api, cluster, owner).await?,
                    conflicts,
                );
                kinds.push("Cluster");
            }
            None => delete_if_owned(ctx, ns, &ar, &name, owner).await?,
        }
    }

    out.deployment = if hold_runtime {
        Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .get_opt(&bot)
            .await?
    } else {
        done(apply(ctx, ns, &c.deployment, owner).await?, conflicts)
    };
    done(apply(ctx, ns, &c.service, owner).await?, conflicts);
    let dashboard = crate::render::monitoring::dashboard_config_map_name(&bot);
    conflicts.extend(apply_or_delete(ctx, ns, &dashboard, c.dashboard.as_ref(), owner).await?);
    if apis.autoscaling_v2 {
        conflicts.extend(apply_or_delete(ctx, ns, &bot, c.autoscaler.as_ref(), owner).await?);
        if c.autoscaler.is_some() {
            kinds.push("HorizontalPodAutoscaler");
        }
    }
    if apis.policy_v1 {
        conflicts
            .extend(apply_or_delete(ctx, ns, &bot, c.disruption_budget.as_ref(), owner).await?);
        if c.disruption_budget.is_some() {
            kinds.push("PodDisruptionBudget");
        }
    }
    if apis.networking_v1 {
        conflicts.extend(apply_or_delete(ctx, ns, &bot, c.network_policy.as_ref(), owner).await?);
        conflicts.extend(apply_or_delete(ctx, ns, &bot, c.ingress.as_ref(), owner).await?);
        if c.network_policy.is_some() || c.redis.is_some() || c.database.is_some() {
            kinds.push("NetworkPolicy");
        }
        if c.ingress.is_some() {
            kinds.push("Ingress");
        }
    }
    out.monitoring = monitoring(ctx, ns, &bot, c, owner, conflicts).await?;
    if out.monitoring == Monitoring::Applied {
        kinds.extend(["ServiceMonitor", "PrometheusRule"]);
    }
    ctx.set_managed(format!("{ns}/{bot}"), kinds);
    Ok(out)
}

/// The ServiceMonitor and PrometheusRule, when the Prometheus Operator's
/// API is served; without it nothing is written and the status says why.
/// (Rediscovery rebuilds the watches once its CRDs appear, which
/// reconciles every bot again.)
async fn monitoring(
    ctx: &Context,
    ns: &str,
    bot: &str,
    c: &Children,
    owner: &Owner<'_>,
    conflicts: &mut Vec<NameConflict>,
) -> Result<Monitoring, Error> {
    let wanted = c.service_monitor.is_some();
    if !ctx.apis().monitoring_v1 {
        return Ok(if wanted {
            Monitoring::ApiMissing
        } else {
            Monitoring::Off
        });
    }
    let before = conflicts.len();
    conflicts.extend(apply_or_delete(ctx, ns, bot, c.service_monitor.as_ref(), owner).await?);
    conflicts.extend(apply_or_delete(ctx, ns, bot, c.prometheus_rule.as_ref(), owner).await?);
    Ok(match (wanted, conflicts.len() > before) {
        (false, _) => Monitoring::Off,
        (true, false) => Monitoring::Applied,
        (true, true) => Monitoring::Conflict,
    })
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
    owner: &Owner<'_>,
    conflicts: &mut Vec<NameConflict>,
) -> Result<Option<StatefulSet>, Error> {
    let networking = ctx.apis().networking_v1;
    let Some(w) = wanted else {
        delete_if_owned(
            ctx,
            ns,
            &ApiResource::erase::<StatefulSet>(&()),
            name,
            owner,
        )
        .await?;
        delete_if_owned(ctx, ns, &ApiResource::erase::<Service>(&()), name, owner).await?;
        if networking {
            delete_if_owned(
                ctx,
                ns,
                &ApiResource::erase::<NetworkPolicy>(&()),
                name,
                owner,
            )
            .await?;
        }
        delete_if_owned(ctx, ns, &ApiResource::erase::<Secret>(&()), name, owner).await?;
        return Ok(None);
    };
    done(apply(ctx, ns, &w.service, owner).await?, conflicts);
    if networking {
        done(apply(ctx, ns, &w.network_policy, owner).await?, conflicts);
    }
    if let Component::Blocked(_) = component {
        return Ok(None);
    }
    Ok(done(
        apply(ctx, ns, &w.statefulset, owner).await?,
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
    owner: &Owner<'_>,
    conflicts: &mut Vec<NameConflict>,
) -> Result<(), Error> {
    let name = labels::db_backup_name(&cb.name_any());
    let claim_ar = ApiResource::erase::<PersistentVolumeClaim>(&());
    let Some((job, claim)) = &c.backup else {
        delete_if_owned(ctx, ns, &ApiResource::erase::<CronJob>(&()), &name, owner).await?;
        delete_if_owned(ctx, ns, &claim_ar, &name, owner).await?;
        return Ok(());
    };
    let exists = metadata_of(ctx, &claim_ar, ns, &name).await?;
    match exists {
        Some(m) if !ours(&m, owner.reference, &cb.name_any()) => {
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
                Ok(created) => owner.note(
                    Change::Created,
                    child_ref(&claim_ar, ns, &name, created.meta().uid.clone()),
                ),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    done(apply(ctx, ns, job, owner).await?, conflicts);
    Ok(())
}

/// Controlled by this ClawdBot, or made for it and kept unowned on purpose
/// (a retained volume's claim or credentials carry its labels, no owner).
pub fn ours(m: &ObjectMeta, reference: &ObjectReference, bot: &str) -> bool {
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
