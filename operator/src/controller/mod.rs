//! The controller: watch ClawdBots (as raw objects, so one malformed CR
//! cannot break the watch for the others) and their children, then
//! parse -> validate -> prepare state -> build -> apply -> status for each.

mod apply;
mod children;
mod discovery;
mod events;
mod probe;
mod reconcile;
mod secrets;
mod state;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde_json::{Value, json};

pub use children::Meta;
pub use discovery::{Apis, MIN_KUBERNETES, MONITORING_V1, server_version};
pub use events::{MAX_NOTE_BYTES, truncate_note};
pub use watch::{child_kinds, run};

use crate::crd::{ClawdBot, ClawdBotStatus};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
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

/// Default URL of a bot for the operator's `/health/ready` reads.
pub const DEFAULT_PROBE_URL: &str = "http://{name}.{namespace}.svc:18789";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub default_image: String,
    pub resource: ApiResource,
    /// The operator's own namespace (admitted by bots' NetworkPolicies).
    pub operator_namespace: Option<String>,
    /// `{name}` and `{namespace}` are replaced by the bot's.
    pub probe_url: String,
    pub liveness: Arc<Liveness>,
    apis: RwLock<Apis>,
    children: children::ChildCache,
    secrets: secrets::SecretCache,
    http: probe::HttpClient,
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
            default_image,
            resource: ApiResource::erase::<ClawdBot>(&()),
            operator_namespace: None,
            probe_url: DEFAULT_PROBE_URL.into(),
            liveness: Arc::new(Liveness::new(Duration::from_secs(300))),
            apis: RwLock::new(apis),
            children: Default::default(),
            secrets: Default::default(),
            http: probe::http_client(),
            failures: Mutex::new(HashMap::new()),
            managed: Mutex::new(HashMap::new()),
        }
    }

    pub fn apis(&self) -> Apis {
        *self.apis.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_apis(&self, apis: Apis) {
        *self.apis.write().unwrap_or_else(|e| e.into_inner()) = apis;
    }

    /// Records the kinds a bot has, and moves the per-kind gauge by the
    /// difference (not a recount of every bot on each reconcile).
    fn set_managed(&self, key: String, kinds: Vec<&'static str>) {
        let mut m = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        let before = if kinds.is_empty() {
            m.remove(&key)
        } else {
            m.insert(key, kinds.clone())
        }
        .unwrap_or_default();
        if before == kinds {
            return;
        }
        let mut delta: BTreeMap<&str, i64> = BTreeMap::new();
        for k in before {
            *delta.entry(k).or_default() -= 1;
        }
        for k in kinds {
            *delta.entry(k).or_default() += 1;
        }
        for (k, d) in delta.into_iter().filter(|(_, d)| *d != 0) {
            self.metrics.managed.with_label_values(&[k]).add(d);
        }
    }

    /// Seeds the watch caches as a first list would, for tests and tools
    /// that run `reconcile` without watches: each kind in `kinds` is cached
    /// with those of `objects` that are of its kind (none: cached empty).
    pub fn seed_caches(&self, kinds: &[ApiResource], objects: &[children::Meta]) {
        use kube::runtime::reflector::store::Writer;
        use kube::runtime::watcher::Event;
        for ar in kinds {
            let mut w = Writer::<children::Meta>::new(ar.clone());
            w.apply_watcher_event(&Event::Init);
            for o in objects {
                if o.types.as_ref().is_some_and(|t| t.kind == ar.kind) {
                    w.apply_watcher_event(&Event::InitApply(o.clone()));
                }
            }
            w.apply_watcher_event(&Event::InitDone);
            let reader = w.as_reader();
            if ar.kind == "Secret" && ar.group.is_empty() {
                self.secrets.set_store(Some(reader.clone()));
            }
            self.children.register(ar, reader);
            // The writer is dropped: the store keeps what it holds.
        }
    }

    fn probe_base(&self, ns: &str, name: &str) -> String {
        self.probe_url
            .replace("{name}", name)
            .replace("{namespace}", ns)
    }

    /// What the operator keeps about a bot that is being deleted or is
    /// gone: its managed-objects count and its Secret index entries. Called from the reconcile of a bot being deleted
    /// and from the watch's delete event (a bot without finalizers is never
    /// reconciled once deleted).
    pub fn forget_bot(&self, obj: &DynamicObject) {
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        self.set_managed(key(obj), vec![]);
        self.secrets.forget_bot(&ns, &name);
    }
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
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
    ctx.liveness.reconcile_started();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.liveness.reconcile_finished();
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
        ctx.forget_bot(obj);
        return Ok(Action::await_change());
    }
    let cb = match validate::parse(obj) {
        Ok(cb) => cb,
        Err(e) => {
            // Unreadable spec: report it on the object, touch nothing else.
            events::warn(ctx, &reference, "InvalidSpec", &e.to_string()).await;
            let shell = ClawdBot {
                metadata: obj.metadata.clone(),
                spec: Default::default(),
                status: obj
                    .data
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok()),
            };
            let obs = Observation::without_children(Health::Invalid(e.to_string()), now());
            patch_status(ctx, &ns, &shell, next_status(&shell, &obs)).await?;
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
        events::warn(ctx, &reference, "InvalidSpec", &msg).await;
        report_without_applying(ctx, &ns, &cb, Health::Invalid(msg), false).await?;
        return Ok(Action::await_change());
    }
    reconcile::reconcile_children(ctx, &ns, &cb, &reference).await
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
    let mut obs = Observation::without_children(health, now());
    obs.paused = paused;
    obs.deployment = dep.as_ref();
    patch_status(ctx, ns, cb, next_status(cb, &obs)).await
}

/// Writes status only when it differs from what is stored, so a reconcile
/// that changes nothing writes nothing. A field that became empty is sent
/// as null: a merge patch leaves out-of-patch fields as they were.
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
        &Patch::Merge(json!({ "status": status_patch(cb.status.as_ref(), &status) })),
    )
    .await?;
    Ok(())
}

/// The merge patch body turning `old` into `new`: `new` plus a null for
/// each top-level field `old` had and `new` has not.
pub fn status_patch(old: Option<&ClawdBotStatus>, new: &ClawdBotStatus) -> Value {
    let mut patch = serde_json::to_value(new).unwrap_or_else(|_| json!({}));
    if let (Some(old), Value::Object(map)) = (old, &mut patch)
        && let Ok(Value::Object(before)) = serde_json::to_value(old)
    {
        for k in before.keys() {
            map.entry(k.clone()).or_insert(Value::Null);
        }
    }
    patch
}
