//! Writing children: server-side apply of what the builders produced, never
//! onto an object this ClawdBot does not control, and without asking the API
//! server what the watch caches already know.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::events::{Change, Owner};
use super::{Context, Error};
use crate::labels::MANAGER;

pub type Meta = PartialObjectMeta<DynamicObject>;

/// What a watch cache says about one object.
pub enum Known {
    Present(Arc<Meta>),
    /// The cache holds every object of the kind in scope: it does not exist.
    Absent,
}

/// Metadata caches of every object of each child kind (and of Secrets),
/// and the resourceVersion each of the operator's own writes produced, so
/// the watch event a write causes does not trigger another reconcile.
#[derive(Default)]
pub struct ChildCache {
    stores: RwLock<HashMap<String, Store<Meta>>>,
    written: Mutex<HashMap<(String, String, String), String>>,
}

fn kind_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.kind)
}

impl ChildCache {
    /// `store` must watch every object of the kind in scope (no label
    /// selector): a miss then means the object does not exist.
    pub fn register(&self, ar: &ApiResource, store: Store<Meta>) {
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind_key(ar), store);
    }

    pub fn clear(&self) {
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Waits (bounded) until every cache has listed once, so the first
    /// reconciles after a start do not fall back to a GET per child.
    pub async fn wait_ready(&self) {
        let stores: Vec<Store<Meta>> = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in stores {
            let _ = tokio::time::timeout(Duration::from_secs(30), s.wait_until_ready()).await;
        }
    }

    /// None when there is no cache for the kind (tests, or an API found
    /// after the controller started).
    pub fn lookup(&self, ar: &ApiResource, ns: &str, name: &str) -> Option<Known> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let store = stores.get(&kind_key(ar))?;
        let key = ObjectRef::<Meta>::new_with(name, ar.clone()).within(ns);
        Some(match store.get(&key) {
            Some(m) => Known::Present(m),
            None => Known::Absent,
        })
    }

    /// Records the resourceVersion the operator's own write produced.
    pub fn note_write(&self, ar: &ApiResource, ns: &str, name: &str, rv: Option<String>) {
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind_key(ar), ns.to_owned(), name.to_owned());
        match rv {
            Some(rv) => {
                w.insert(key, rv);
            }
            None => {
                w.remove(&key);
            }
        }
    }

    /// Whether a watch event only shows the operator's own last write.
    pub fn is_own_write(&self, ar: &ApiResource, m: &Meta) -> bool {
        let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let key = (
            kind_key(ar),
            m.namespace().unwrap_or_default(),
            m.name_any(),
        );
        m.metadata.deletion_timestamp.is_none()
            && m.metadata.resource_version.is_some()
            && w.get(&key) == m.metadata.resource_version.as_ref()
    }
}

/// An object's metadata: from the cache when it knows, else from the API.
pub async fn metadata_of(
    ctx: &Context,
    ar: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, Error> {
    Ok(match ctx.children.lookup(ar, ns, name) {
        Some(Known::Present(m)) => Some(m.metadata.clone()),
        Some(Known::Absent) => None,
        None => {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
            api.get_metadata_opt(name).await?.map(|m| m.metadata)
        }
    })
}

/// Whether the object's controller reference is this ClawdBot.
pub fn controlled_by(meta: &ObjectMeta, reference: &ObjectReference) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == reference.uid.as_ref() && o.controller == Some(true))
}

/// A child the ClawdBot wants but does not control: someone else made an
/// object with that name. It is left untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct NameConflict {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for NameConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} exists and is not controlled by this ClawdBot; it is left untouched: \
             delete or rename it, or rename the ClawdBot",
            self.kind, self.name
        )
    }
}

pub enum Applied<T> {
    Done(T),
    Conflict(NameConflict),
}

/// Where the object stands before a write: its resourceVersion, or a
/// conflict. Asks the API server only when the cache does not know it.
async fn before_write(
    ctx: &Context,
    ar: &ApiResource,
    ns: &str,
    name: &str,
    reference: &ObjectReference,
) -> Result<Result<Option<String>, NameConflict>, Error> {
    Ok(match metadata_of(ctx, ar, ns, name).await? {
        None => Ok(None),
        Some(m) if controlled_by(&m, reference) => Ok(m.resource_version),
        Some(_) => Err(NameConflict {
            kind: ar.kind.clone(),
            name: name.to_owned(),
        }),
    })
}

/// Server-side apply with our field manager; an Event says what changed.
pub async fn apply<K>(
    ctx: &Context,
    ns: &str,
    obj: &K,
    owner: &Owner<'_>,
) -> Result<Applied<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    apply_with(ctx, ns, &ar, &api, obj, owner).await
}

pub async fn apply_with<K>(
    ctx: &Context,
    ns: &str,
    ar: &ApiResource,
    api: &Api<K>,
    obj: &K,
    owner: &Owner<'_>,
) -> Result<Applied<K>, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let before = match before_write(ctx, ar, ns, &name, owner.reference).await? {
        Ok(rv) => rv,
        Err(c) => return Ok(Applied::Conflict(c)),
    };
    let after = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    let rv = after.meta().resource_version.clone();
    ctx.children.note_write(ar, ns, &name, rv.clone());
    let child = || child_ref(ar, ns, &name, after.meta().uid.clone());
    match before {
        None => owner.note(Change::Created, child()),
        Some(old) if rv.as_ref() != Some(&old) => owner.note(Change::Updated, child()),
        Some(_) => {}
    }
    Ok(Applied::Done(after))
}

/// Applies the object, or deletes the one named `name` when the spec no
/// longer wants it (only if this ClawdBot controls it).
pub async fn apply_or_delete<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    obj: Option<&K>,
    owner: &Owner<'_>,
) -> Result<Option<NameConflict>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ar = ApiResource::erase::<K>(&());
    match obj {
        Some(o) => Ok(match apply(ctx, ns, o, owner).await? {
            Applied::Done(_) => None,
            Applied::Conflict(c) => Some(c),
        }),
        None => {
            delete_if_owned(ctx, ns, &ar, name, owner).await?;
            Ok(None)
        }
    }
}

/// Deletes the named child when this ClawdBot controls it (never an object
/// someone else made with the same name). Without a cache entry for a
/// labelled kind, there is nothing of ours to delete.
pub async fn delete_if_owned(
    ctx: &Context,
    ns: &str,
    ar: &ApiResource,
    name: &str,
    owner: &Owner<'_>,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
    if let Some(meta) = metadata_of(ctx, ar, ns, name).await?
        && controlled_by(&meta, owner.reference)
    {
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        ctx.children.note_write(ar, ns, name, None);
        owner.note(Change::Deleted, child_ref(ar, ns, name, meta.uid.clone()));
    }
    Ok(())
}

pub fn child_ref(ar: &ApiResource, ns: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(ar.api_version.clone()),
        kind: Some(ar.kind.clone()),
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}
