//! The watches that drive reconciles, and the loop that rebuilds them when
//! discovery finds that the cluster's APIs changed.
//!
//! - ClawdBots: only a new generation, labels or annotations trigger (a
//!   status write does not).
//! - Children: metadata-only watches of every object of each child kind,
//!   cached for the reconciler; an event that only shows the operator's own
//!   last write is dropped.
//! - Secrets: metadata of every Secret, mapped to the bots that read them
//!   through the index each reconcile keeps.

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::{Predicate, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch as signal;

use super::apply::cnpg_resource;
use super::children::Meta;
use super::{Apis, Context, error_policy, reconcile};
use crate::crd::monitoring::{PrometheusRule, ServiceMonitor};

/// Runs the controller for one scope (a namespace, or all with None) until
/// `stop` turns true. Discovery is repeated every `rediscover`; when the
/// served APIs change, the watches are rebuilt (every bot is then
/// reconciled once). Several namespaces: one run each, each with its own
/// Context (its watch caches are per scope).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    mut stop: signal::Receiver<bool>,
    rediscover: Duration,
) {
    loop {
        let apis = loop {
            match Apis::discover(&ctx.client).await {
                Ok(a) => break a,
                Err(e) => {
                    ctx.metrics.errors.with_label_values(&["discovery"]).inc();
                    tracing::warn!(error = %e, "API discovery failed; retrying in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        ctx.set_apis(apis);
        tracing::info!(?apis, "watching the served APIs");
        let (changed_tx, changed_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher_task = tokio::spawn(watch_discovery(ctx.clone(), apis, rediscover, changed_tx));
        let mut stop_inner = stop.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stop_inner.wait_for(|s| *s) => {}
                _ = changed_rx => {}
            }
        };
        run_once(ctx.clone(), namespace.clone(), concurrency, apis, shutdown).await;
        watcher_task.abort();
        ctx.children.clear();
        ctx.secrets.set_store(None);
        ctx.metrics
            .set_bot_store(namespace.as_deref().unwrap_or_default(), None);
        if *stop.borrow() {
            return;
        }
        tracing::info!("the cluster's APIs changed: rebuilding the watches");
    }
}

async fn watch_discovery(
    ctx: Arc<Context>,
    current: Apis,
    every: Duration,
    changed: tokio::sync::oneshot::Sender<()>,
) {
    loop {
        tokio::time::sleep(every).await;
        match Apis::discover(&ctx.client).await {
            Ok(now) if now != current => {
                tracing::info!(added = ?now.added_since(&current), removed = ?current.added_since(&now), "served APIs changed");
                let _ = changed.send(());
                return;
            }
            Ok(_) => {}
            Err(e) => {
                ctx.metrics.errors.with_label_values(&["discovery"]).inc();
                tracing::warn!(error = %e, "API discovery failed; keeping the APIs found before");
            }
        }
    }
}

/// Every child kind the controller watches (and caches) with these APIs.
pub fn child_kinds(apis: Apis) -> Vec<ApiResource> {
    let mut kinds = vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
    ];
    if apis.autoscaling_v2 {
        kinds.push(ApiResource::erase::<HorizontalPodAutoscaler>(&()));
    }
    if apis.policy_v1 {
        kinds.push(ApiResource::erase::<PodDisruptionBudget>(&()));
    }
    if apis.networking_v1 {
        kinds.push(ApiResource::erase::<NetworkPolicy>(&()));
        kinds.push(ApiResource::erase::<Ingress>(&()));
    }
    if apis.batch_v1 {
        kinds.push(ApiResource::erase::<CronJob>(&()));
    }
    if apis.cnpg {
        kinds.push(cnpg_resource());
    }
    if apis.monitoring_v1 {
        kinds.push(ApiResource::erase::<ServiceMonitor>(&()));
        kinds.push(ApiResource::erase::<PrometheusRule>(&()));
    }
    kinds
}

fn meta_api(
    client: &Client,
    ns: &Option<String>,
    ar: &ApiResource,
) -> Api<PartialObjectMeta<DynamicObject>> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

async fn run_once(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    apis: Apis,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ar = ctx.resource.clone();
    let bots: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let writer = Writer::<DynamicObject>::new(ar.clone());
    let reader = writer.as_reader();
    ctx.metrics.set_bot_store(
        namespace.as_deref().unwrap_or_default(),
        Some(reader.clone()),
    );
    let liveness = ctx.liveness.clone();
    let gone_ctx = ctx.clone();
    let bot_events = watcher(bots, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(bot) = event {
                gone_ctx.forget_bot(bot);
            }
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::labels)
                .combine(predicates::annotations),
            Default::default(),
        )
        .map(move |r| {
            if r.is_ok() {
                liveness.triggered();
            }
            r
        });
    let mut controller = Controller::for_stream_with(bot_events, reader.clone(), ar.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency));
    for kind in child_kinds(apis) {
        let events = child_events(&ctx, &namespace, kind.clone(), reader.clone());
        controller = controller.owns_stream_with(events, kind);
    }
    // Secrets: every one in scope (a bot reads Secrets it did not make).
    let secret_ar = ApiResource::erase::<Secret>(&());
    let swriter = Writer::<Meta>::new(secret_ar.clone());
    let sreader = swriter.as_reader();
    ctx.children.register(&secret_ar, sreader.clone());
    ctx.secrets.set_store(Some(sreader));
    let own_ctx = ctx.clone();
    let own_ar = secret_ar.clone();
    let secrets = watcher(
        meta_api(&client, &namespace, &secret_ar),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(swriter)
    .filter_map(move |event| ready(not_own_write(&own_ctx, &own_ar, event)));
    let mapper_ctx = ctx.clone();
    let bot_ar = ar.clone();
    controller = controller.watches_stream_with(
        secrets,
        move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            let bots = mapper_ctx.secrets.bots_for(&ns, &secret.name_any());
            if !bots.is_empty() {
                mapper_ctx.liveness.triggered();
            }
            let bot_ar = bot_ar.clone();
            bots.into_iter()
                .map(move |b| ObjectRef::new_with(&b, bot_ar.clone()).within(&ns))
                .collect::<Vec<_>>()
        },
        secret_ar,
    );
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// Watch events of one child kind that can change what a reconcile would
/// do: not the echo of the operator's own write. Every object of the kind
/// in scope is watched (metadata only), not just those labelled as ours:
/// then the cache also knows that a name is free, or taken by someone
/// else, without a GET before each apply.
fn child_events(
    ctx: &Arc<Context>,
    namespace: &Option<String>,
    ar: ApiResource,
    bots: Store<DynamicObject>,
) -> impl Stream<Item = Result<Meta, watcher::Error>> + Send + 'static {
    let writer = Writer::<Meta>::new(ar.clone());
    ctx.children.register(&ar, writer.as_reader());
    let api = meta_api(&ctx.client, namespace, &ar);
    let ctx = ctx.clone();
    let bot_ar = ctx.resource.clone();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| {
            let passed = not_own_write(&ctx, &ar, event);
            if let Some(Ok(m)) = &passed
                && owner_bot(m, &bot_ar).is_some_and(|r| bots.get(&r).is_some())
            {
                ctx.liveness.triggered();
            }
            ready(passed)
        })
        .boxed()
}

/// The object a watch event carries, unless the event only shows the
/// operator's own last write (which the reconcile that made it already saw).
fn not_own_write(
    ctx: &Context,
    ar: &ApiResource,
    event: Result<watcher::Event<Meta>, watcher::Error>,
) -> Option<Result<Meta, watcher::Error>> {
    match event {
        Ok(watcher::Event::Apply(m)) if ctx.children.is_own_write(ar, &m) => None,
        Ok(watcher::Event::Delete(m)) => {
            // Gone: what was remembered about it would only pile up.
            let (ns, name) = (m.namespace().unwrap_or_default(), m.name_any());
            ctx.children.note_write(ar, &ns, &name, None);
            if ar.kind == "Secret" && ar.group.is_empty() {
                ctx.secrets.forget(&ns, &name);
            }
            Some(Ok(m))
        }
        Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => Some(Ok(m)),
        Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        Err(e) => Some(Err(e)),
    }
}

fn owner_bot(m: &Meta, bot_ar: &ApiResource) -> Option<ObjectRef<DynamicObject>> {
    let o = m
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == bot_ar.kind)?;
    Some(ObjectRef::new_with(&o.name, bot_ar.clone()).within(&m.namespace()?))
}
