//! One reconcile of a valid, unpaused ClawdBot: credentials, children (see
//! apply.rs), then the status from what was applied and observed.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, PostParams};
use kube::runtime::controller::Action;
use rand::Rng;

use super::apply::apply_all;
use super::children::{Applied, NameConflict, apply, child_ref, delete_if_owned, metadata_of};
use super::events::{Change, Owner, warn};
use super::probe::{self, Readiness};
use super::state::{self, Component, Problem};
use super::{Context, Error, now, patch_status};
use crate::crd::ClawdBot;
use crate::labels::{self, MANAGER};
use crate::render::{self, Inputs};
use crate::status::{Dependency, Health, Observation, PROMETHEUS_OPERATOR_MISSING, next_status};

/// How often a bot with an external Redis or database is looked at again:
/// its health changes without any watch event.
const EXTERNAL_RECHECK: Duration = Duration::from_secs(60);

pub async fn reconcile_children(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    reference: &ObjectReference,
) -> Result<Action, Error> {
    let owner = Owner::new(reference);
    let result = reconcile_with(ctx, ns, cb, &owner).await;
    // What was changed is said even when a later step failed.
    owner.publish(ctx).await;
    result
}

async fn reconcile_with(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    owner: &Owner<'_>,
) -> Result<Action, Error> {
    let bot = cb.name_any();
    ctx.children.wait_ready().await;
    let auth_secret_name = ensure_api_keys_secret(ctx, cb, ns, owner).await?;
    let st = state::prepare(ctx, cb, ns, owner).await?;
    let mut conflicts: Vec<NameConflict> = Vec::new();

    // The runtime's connection URLs, before the pods that read them. Left
    // as they are while a managed component is blocked.
    let blocked = st.redis.problem().is_some() || st.database.problem().is_some();
    if !blocked {
        let (redis_url, db_url) = state::connection_urls(cb, &st);
        let name = labels::connections_secret_name(&bot);
        match render::connections_secret(cb, redis_url, db_url) {
            Some(wanted) => match apply(ctx, ns, &wanted, owner).await? {
                Applied::Done(s) => ctx.secrets.remember(ns, &s),
                Applied::Conflict(c) => conflicts.push(c),
            },
            None => {
                let ar = ApiResource::erase::<Secret>(&());
                delete_if_owned(ctx, ns, &ar, &name, owner).await?;
            }
        }
    }
    let mut read = render::referenced_secrets(cb);
    let (digest, mut missing) = ctx.secrets.digest(ctx, ns, &read).await?;
    // CloudNativePG writes its Secret once the Cluster is up: until then
    // the bot waits (DatabaseReady), it is not broken.
    let cnpg_secret = labels::cnpg_app_secret_name(&bot);
    missing.retain(|m| *m != cnpg_secret);
    read.extend(generated_secret_names(cb));
    ctx.secrets.index(ns, &bot, read);
    // A channel Secret lacking a key the runtime requires would make every
    // new pod refuse to start: say which, and leave the running pods be.
    let mut channel_problems: Vec<Problem> =
        crate::credentials::missing_channel_keys(cb, |name| ctx.secrets.keys(ns, name))
            .into_iter()
            .map(|message| Problem {
                reason: "ChannelCredentialsMissing",
                message,
            })
            .collect();
    // Likewise a keyring the runtime would refuse.
    channel_problems.extend(
        crate::encryption::keyring_problem(cb, |name, key| ctx.secrets.keyring(ns, name, key)).map(
            |message| Problem {
                reason: "EncryptionKeyringInvalid",
                message,
            },
        ),
    );

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

    let hold_runtime = !channel_problems.is_empty();
    let outcome = apply_all(
        ctx,
        ns,
        cb,
        &children,
        &st,
        hold_runtime,
        owner,
        &mut conflicts,
    )
    .await;
    let applied = match outcome {
        Ok(a) => a,
        Err(e) => {
            warn(ctx, owner.reference, "ApplyFailed", &e.to_string()).await;
            let mut obs = Observation::without_children(Health::ApplyFailed(e.to_string()), now());
            obs.auth_secret_name = Some(auth_secret_name);
            patch_status(ctx, ns, cb, next_status(cb, &obs)).await?;
            return Err(e);
        }
    };
    let mut problems: Vec<Problem> = st.problems.clone();
    problems.extend(channel_problems);
    problems.extend(st.redis.problem().cloned());
    problems.extend(st.database.problem().cloned());
    problems.extend(conflicts.iter().map(|c| Problem {
        reason: "NameConflict",
        message: c.to_string(),
    }));
    let health = if let Some(first) = problems.first() {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        // One Warning per problem when it appears, not one per reconcile.
        let known = cb.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && c.reason == first.reason
                    && c.message == message
            })
        });
        if !known {
            for p in &problems {
                warn(ctx, owner.reference, p.reason, &p.message).await;
            }
        }
        Health::Blocked(first.reason, message)
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
        monitoring: applied.monitoring,
        now: now(),
    };
    let status = next_status(cb, &obs);
    warn_when_state_becomes_pod_local(ctx, cb, &status, owner).await;
    warn_when_monitoring_missing(ctx, cb, &status, owner).await;
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
    owner: &Owner<'_>,
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
        warn(ctx, owner.reference, "StateNotShared", &c.message).await;
    }
}

/// One Warning when monitoring is asked for on a cluster without the
/// Prometheus Operator, not one per reconcile.
async fn warn_when_monitoring_missing(
    ctx: &Context,
    cb: &ClawdBot,
    status: &crate::crd::ClawdBotStatus,
    owner: &Owner<'_>,
) {
    fn missing(s: &crate::crd::ClawdBotStatus) -> Option<&Condition> {
        s.conditions.iter().find(|c| {
            c.type_ == "MonitoringReady"
                && c.status == "False"
                && c.reason == PROMETHEUS_OPERATOR_MISSING
        })
    }
    if let Some(c) = missing(status)
        && cb.status.as_ref().and_then(missing).is_none()
    {
        warn(
            ctx,
            owner.reference,
            PROMETHEUS_OPERATOR_MISSING,
            &c.message,
        )
        .await;
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
    deployment: Option<&Deployment>,
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

/// Creates the generated API key Secret once, when the spec names none.
async fn ensure_api_keys_secret(
    ctx: &Context,
    cb: &ClawdBot,
    ns: &str,
    owner: &Owner<'_>,
) -> Result<String, Error> {
    let ar = ApiResource::erase::<Secret>(&());
    let generated = labels::api_keys_secret_name(&cb.name_any());
    if let Some(r) = &cb.spec.auth.api_keys_secret_ref {
        delete_if_owned(ctx, ns, &ar, &generated, owner).await?;
        return Ok(r.name.clone());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let exists = metadata_of(ctx, &ar, ns, &generated).await?.is_some();
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
                ctx.secrets.remember(ns, &created);
                let rv = created.metadata.resource_version.clone();
                ctx.children.note_write(&ar, ns, &generated, rv);
                owner.note(
                    Change::Created,
                    child_ref(&ar, ns, &generated, created.metadata.uid.clone()),
                )
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(generated)
}
