//! The controller: watch ClawdBots (as raw objects, so one malformed CR
//! cannot break the watch for the others) and their children, then
//! parse -> validate -> build -> apply -> status for each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{ClawdBot, ClawdBotStatus};
use crate::labels::{self, MANAGER};
use crate::metrics::Metrics;
use crate::render::{self, Inputs};
use crate::status::{Health, Observation, next_status};
use crate::validate;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building children: {0}")]
    Build(String),
}

impl Error {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "client_error",
            Error::Build(_) => "build_error",
        }
    }
}

/// Optional APIs found by discovery: children of absent kinds are neither
/// watched nor applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Apis {
    pub autoscaling_v2: bool,
    pub policy_v1: bool,
    pub networking_v1: bool,
}

impl Apis {
    pub fn all() -> Self {
        Self {
            autoscaling_v2: true,
            policy_v1: true,
            networking_v1: true,
        }
    }

    pub async fn discover(client: &Client) -> Self {
        let has = |gv: &'static str, plural: &'static str| {
            let client = client.clone();
            async move {
                match client.list_api_group_resources(gv).await {
                    Ok(list) => list.resources.iter().any(|r| r.name == plural),
                    Err(e) => {
                        tracing::info!(api = gv, error = %e, "API not available; its children are skipped");
                        false
                    }
                }
            }
        };
        Self {
            autoscaling_v2: has("autoscaling/v2", "horizontalpodautoscalers").await,
            policy_v1: has("policy/v1", "poddisruptionbudgets").await,
            networking_v1: has("networking.k8s.io/v1", "networkpolicies").await,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub apis: Apis,
    pub default_image: String,
    pub resource: ApiResource,
    failures: Mutex<HashMap<String, u32>>,
    managed: Mutex<HashMap<String, Vec<&'static str>>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        apis: Apis,
        default_image: String,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            apis,
            default_image,
            resource: ApiResource::erase::<ClawdBot>(&()),
            failures: Mutex::new(HashMap::new()),
            managed: Mutex::new(HashMap::new()),
        }
    }

    fn set_managed(&self, key: String, kinds: Vec<&'static str>) {
        let mut m = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        if kinds.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key, kinds);
        }
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for kinds in m.values() {
            for k in kinds {
                *counts.entry(k).or_default() += 1;
            }
        }
        self.metrics.managed.reset();
        for (k, n) in counts {
            self.metrics.managed.with_label_values(&[k]).set(n);
        }
    }
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ar = ctx.resource.clone();
    let bots: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        client: &Client,
        ns: &Option<String>,
    ) -> Api<K> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default().labels(labels::MANAGED_SELECTOR);
    let mut controller = Controller::new_with(bots, watcher::Config::default(), ar)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .owns(api::<Deployment>(&client, &namespace), children.clone())
        .owns(api::<ConfigMap>(&client, &namespace), children.clone())
        .owns(api::<Service>(&client, &namespace), children.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), children.clone())
        .owns(api::<Secret>(&client, &namespace), children.clone());
    if ctx.apis.autoscaling_v2 {
        controller = controller.owns(
            api::<HorizontalPodAutoscaler>(&client, &namespace),
            children.clone(),
        );
    }
    if ctx.apis.policy_v1 {
        controller = controller.owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            children.clone(),
        );
    }
    if ctx.apis.networking_v1 {
        controller = controller
            .owns(api::<NetworkPolicy>(&client, &namespace), children.clone())
            .owns(api::<Ingress>(&client, &namespace), children.clone());
    }
    // A changed Secret that a bot references rolls its pods (the config hash
    // covers Secret contents). Metadata is enough to notice the change.
    let store = controller.store();
    let secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    controller = controller.watches_stream(secrets, move |secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        store
            .state()
            .into_iter()
            .filter(|bot| bot.namespace() == ns)
            .filter(|bot| {
                validate::parse(bot).is_ok_and(|cb| render::referenced_secrets(&cb).contains(&name))
            })
            .map(|bot| ObjectRef::from_obj_with(bot.as_ref(), ctx_resource()))
            .collect::<Vec<_>>()
    });
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

fn ctx_resource() -> ApiResource {
    ApiResource::erase::<ClawdBot>(&())
}

/// Backoff on errors: exponential from 1 s to 5 min, with jitter so many
/// failing bots do not retry in lockstep.
pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempts = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key(&obj)).or_insert(0);
        *n += 1;
        *n
    };
    ctx.metrics.errors.with_label_values(&[err.reason()]).inc();
    let base = Duration::from_secs(1)
        .saturating_mul(1 << attempts.min(9).saturating_sub(1))
        .min(Duration::from_secs(300));
    let jittered = base.mul_f64(rand::rng().random_range(0.5..1.0));
    tracing::warn!(object = %key(&obj), attempts, retry_in_ms = jittered.as_millis() as u64, error = %err, "reconcile error");
    Action::requeue(jittered)
}

pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(&obj));
    }
    result
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let reference = obj.object_ref(&ctx.resource);
    if obj.metadata.deletion_timestamp.is_some() {
        ctx.set_managed(key(obj), vec![]);
        return Ok(Action::await_change());
    }
    let cb = match validate::parse(obj) {
        Ok(cb) => cb,
        Err(e) => {
            // Unreadable spec: report it on the object, touch nothing else.
            warn_event(ctx, &reference, "InvalidSpec", &e.to_string()).await;
            let shell = ClawdBot {
                metadata: obj.metadata.clone(),
                spec: Default::default(),
                status: obj
                    .data
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok()),
            };
            report(
                ctx,
                &ns,
                &shell,
                Health::Invalid(e.to_string()),
                false,
                None,
                None,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    if cb.spec.paused {
        // Paused: look, report, touch nothing.
        report_without_applying(ctx, &ns, &cb, Health::Ok, true).await?;
        return Ok(Action::await_change());
    }
    let errors = validate::validate(&cb);
    if !errors.is_empty() {
        let msg = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        warn_event(ctx, &reference, "InvalidSpec", &msg).await;
        report_without_applying(ctx, &ns, &cb, Health::Invalid(msg), false).await?;
        return Ok(Action::await_change());
    }

    let auth_secret_name = ensure_api_keys_secret(ctx, &cb, &ns, &reference).await?;
    let (digest, missing) = read_secrets(ctx, &cb, &ns).await?;
    let children = render::build(
        &cb,
        &Inputs {
            secrets_digest: digest,
            default_image: ctx.default_image.clone(),
        },
    )
    .map_err(|e| Error::Build(e.to_string()))?;

    let applied = apply_children(ctx, &ns, &children, &reference).await;
    let deployment = match applied {
        Ok(d) => d,
        Err(e) => {
            warn_event(ctx, &reference, "ApplyFailed", &e.to_string()).await;
            let health = Health::ApplyFailed(e.to_string());
            report(ctx, &ns, &cb, health, false, None, Some(auth_secret_name)).await?;
            return Err(e);
        }
    };
    let health = if missing.is_empty() {
        Health::Ok
    } else {
        Health::MissingSecrets(missing)
    };
    report(
        ctx,
        &ns,
        &cb,
        health,
        false,
        Some(&deployment),
        Some(auth_secret_name),
    )
    .await?;
    Ok(Action::await_change())
}

/// Computes the status from what was observed and writes it if it changed.
async fn report(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    health: Health,
    paused: bool,
    deployment: Option<&Deployment>,
    auth_secret_name: Option<String>,
) -> Result<(), Error> {
    let obs = Observation {
        health,
        paused,
        deployment,
        auth_secret_name,
        now: now(),
    };
    patch_status(ctx, ns, cb, next_status(cb, &obs)).await
}

/// `report` for a bot whose children are left alone: the Deployment is
/// only read, so its rollout state still shows.
async fn report_without_applying(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    health: Health,
    paused: bool,
) -> Result<(), Error> {
    let dep = Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .get_opt(&cb.name_any())
        .await?;
    report(ctx, ns, cb, health, paused, dep.as_ref(), None).await
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    publish_about(ctx, reference, None, type_, reason, note, action).await
}

/// `child` becomes the event's `related` object, which also keeps events
/// about different children from being folded into one series.
async fn publish_about(
    ctx: &Context,
    reference: &ObjectReference,
    child: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: child,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

async fn warn_event(ctx: &Context, reference: &ObjectReference, reason: &str, note: &str) {
    tracing::warn!(object = ?reference.name, reason, note, "ClawdBot rejected");
    publish(
        ctx,
        reference,
        EventType::Warning,
        reason,
        note.to_owned(),
        "Validate",
    )
    .await;
}

fn truncate(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

/// Writes status only when it differs from what is stored, so a reconcile
/// that changes nothing writes nothing.
async fn patch_status(
    ctx: &Context,
    ns: &str,
    cb: &ClawdBot,
    status: ClawdBotStatus,
) -> Result<(), Error> {
    if cb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.resource);
    api.patch_status(
        &cb.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Creates the generated API key Secret once, when the spec names none.
async fn ensure_api_keys_secret(
    ctx: &Context,
    cb: &ClawdBot,
    ns: &str,
    reference: &ObjectReference,
) -> Result<String, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let generated = labels::api_keys_secret_name(&cb.name_any());
    if let Some(r) = &cb.spec.auth.api_keys_secret_ref {
        delete_if_owned::<Secret>(ctx, ns, &generated, reference).await?;
        return Ok(r.name.clone());
    }
    if api.get_metadata_opt(&generated).await?.is_none() {
        let key = hex::encode(rand::rng().random::<[u8; 24]>());
        match api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..PostParams::default()
                },
                &render::api_keys_secret(cb, &key),
            )
            .await
        {
            Ok(created) => {
                let child = Some(child_ref::<Secret>(
                    ns,
                    &generated,
                    created.metadata.uid.clone(),
                ));
                publish_about(
                    ctx,
                    reference,
                    child,
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

/// Digest of the referenced Secrets and the names of missing ones.
async fn read_secrets(
    ctx: &Context,
    cb: &ClawdBot,
    ns: &str,
) -> Result<(String, Vec<String>), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in render::referenced_secrets(cb) {
        match api.get_opt(&name).await? {
            Some(s) => found.push((name, s)),
            None => missing.push(name),
        }
    }
    let digest = render::secrets_digest(found.iter().map(|(n, s)| (n.as_str(), s)));
    Ok((digest, missing))
}

async fn apply_children(
    ctx: &Context,
    ns: &str,
    c: &render::Children,
    reference: &ObjectReference,
) -> Result<Deployment, Error> {
    let cb_name = reference.name.clone().unwrap_or_default();
    apply(ctx, ns, &c.service_account, reference).await?;
    apply(ctx, ns, &c.config_map, reference).await?;
    let deployment = apply(ctx, ns, &c.deployment, reference).await?;
    apply(ctx, ns, &c.service, reference).await?;
    let mut kinds = vec!["ServiceAccount", "ConfigMap", "Deployment", "Service"];
    if ctx.apis.autoscaling_v2 {
        apply_or_delete(ctx, ns, &cb_name, c.autoscaler.as_ref(), reference).await?;
        if c.autoscaler.is_some() {
            kinds.push("HorizontalPodAutoscaler");
        }
    }
    if ctx.apis.policy_v1 {
        apply_or_delete(ctx, ns, &cb_name, c.disruption_budget.as_ref(), reference).await?;
        if c.disruption_budget.is_some() {
            kinds.push("PodDisruptionBudget");
        }
    }
    if ctx.apis.networking_v1 {
        apply_or_delete(ctx, ns, &cb_name, c.network_policy.as_ref(), reference).await?;
        apply_or_delete(ctx, ns, &cb_name, c.ingress.as_ref(), reference).await?;
        if c.network_policy.is_some() {
            kinds.push("NetworkPolicy");
        }
        if c.ingress.is_some() {
            kinds.push("Ingress");
        }
    }
    ctx.set_managed(format!("{ns}/{cb_name}"), kinds);
    Ok(deployment)
}

/// Server-side apply with our field manager; an Event says what changed.
async fn apply<K>(ctx: &Context, ns: &str, obj: &K, reference: &ObjectReference) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    let kind = K::kind(&());
    let before = api
        .get_metadata_opt(&name)
        .await?
        .and_then(|m| m.metadata.resource_version);
    let after = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    let child = || Some(child_ref::<K>(ns, &name, after.uid()));
    match before {
        None => {
            publish_about(
                ctx,
                reference,
                child(),
                EventType::Normal,
                "Created",
                format!("Created {kind} {name}"),
                "Create",
            )
            .await
        }
        Some(rv) if after.resource_version().as_ref() != Some(&rv) => {
            publish_about(
                ctx,
                reference,
                child(),
                EventType::Normal,
                "Updated",
                format!("Updated {kind} {name}"),
                "Update",
            )
            .await
        }
        Some(_) => {}
    }
    Ok(after)
}

async fn apply_or_delete<K>(
    ctx: &Context,
    ns: &str,
    bot: &str,
    obj: Option<&K>,
    reference: &ObjectReference,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    match obj {
        Some(o) => apply(ctx, ns, o, reference).await.map(|_| ()),
        None => delete_if_owned::<K>(ctx, ns, bot, reference).await,
    }
}

/// Deletes the named child when this ClawdBot controls it (never an object
/// someone else made with the same name).
async fn delete_if_owned<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    reference: &ObjectReference,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(meta) = api.get_metadata_opt(name).await?
        && owned_by(&meta.metadata, reference)
    {
        api.delete(name, &Default::default()).await?;
        let child = Some(child_ref::<K>(ns, name, meta.metadata.uid.clone()));
        publish_about(
            ctx,
            reference,
            child,
            EventType::Normal,
            "Deleted",
            format!("Deleted {} {name}: no longer in the spec", K::kind(&())),
            "Delete",
        )
        .await;
    }
    Ok(())
}

fn child_ref<K: Resource<DynamicType = ()>>(
    ns: &str,
    name: &str,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    reference: &ObjectReference,
) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == reference.uid.as_ref() && o.controller == Some(true))
}
