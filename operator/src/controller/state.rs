//! Managed Redis and PostgreSQL, the parts only the cluster can answer:
//! credentials generated once (never again while their volume holds data),
//! the runtime's connection URLs, storage classes that exist, a major
//! version the data can be read by, CloudNativePG being installed.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, PostParams};
use rand::Rng;

use super::apply::ours;
use super::children::{Known, child_ref, metadata_of};
use super::events::{Change, Owner};
use super::{Context, Error};
use crate::crd::{ClawdBot, postgres_major};
use crate::labels::{self, MANAGER};
use crate::render::{self, postgres, redis};

pub use crate::status::Problem;

/// One managed component: usable with these credentials, or blocked.
#[derive(Debug, Clone, PartialEq)]
pub enum Component {
    Absent,
    Ready { secret: Box<Secret>, digest: String },
    Blocked(Problem),
}

impl Component {
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Component::Blocked(p) => Some(p),
            _ => None,
        }
    }
}

pub struct State {
    pub redis: Component,
    pub database: Component,
    /// CloudNativePG asked for where it is not installed, or a storage class
    /// that does not exist.
    pub problems: Vec<Problem>,
}

fn value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

fn password() -> String {
    hex::encode(rand::rng().random::<[u8; 24]>())
}

pub async fn prepare(
    ctx: &Context,
    cb: &ClawdBot,
    ns: &str,
    owner: &Owner<'_>,
) -> Result<State, Error> {
    let bot = cb.name_any();
    let apis = ctx.apis();
    let mut problems = Vec::new();
    for (field, class) in render::storage_classes(cb) {
        if apis.storage_v1 && !storage_class_exists(ctx, &class).await? {
            problems.push(Problem {
                reason: "StorageClassNotFound",
                message: format!("{field}: StorageClass {class:?} does not exist in the cluster"),
            });
        }
    }
    // The user's claims the pod mounts: missing, the pod would sit in
    // Pending with no word on the ClawdBot.
    for (field, claim) in render::user_claims(cb) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        if api.get_metadata_opt(&claim).await?.is_none() {
            problems.push(Problem {
                reason: "PersistentVolumeClaimNotFound",
                message: format!(
                    "{field}: PersistentVolumeClaim {claim:?} does not exist in namespace {ns}"
                ),
            });
        }
    }
    let db = cb.spec.database.as_ref();
    if db.is_some_and(|d| d.cloud_native_pg.is_some()) && !apis.cnpg {
        problems.push(Problem {
            reason: "CloudNativePGMissing",
            message: "spec.database.cloudNativePG needs the CloudNativePG operator, but the API \
                      postgresql.cnpg.io/v1 (Cluster) is not served by this cluster: install \
                      CloudNativePG, or use spec.database.managed"
                .into(),
        });
    }

    let redis = match cb.spec.redis.as_ref().and_then(|r| r.managed.as_ref()) {
        None => Component::Absent,
        Some(m) => {
            let name = labels::redis_name(&bot);
            let claim = m
                .persistence
                .as_ref()
                .map(|_| labels::data_claim_name(&name));
            generated(ctx, ns, owner, &name, claim, || {
                redis::password_secret(cb, m.persistence.is_some(), &password())
            })
            .await?
        }
    };
    let database = match db.and_then(|d| d.managed.as_ref()) {
        None => Component::Absent,
        Some(m) => {
            let name = labels::db_name(&bot);
            let claim = labels::data_claim_name(&name);
            match major_change(ctx, ns, &name, &claim, m.image()).await? {
                Some(p) => Component::Blocked(p),
                None => {
                    generated(ctx, ns, owner, &name, Some(claim), || {
                        postgres::credentials_secret(cb, m, &password())
                    })
                    .await?
                }
            }
        }
    };
    Ok(State {
        redis,
        database,
        problems,
    })
}

/// The generated credentials Secret `name`: read, or created when missing,
/// but only while `claim` (the data volume written with them) does not
/// exist: a new password would lock the runtime out of its own data.
async fn generated(
    ctx: &Context,
    ns: &str,
    owner: &Owner<'_>,
    name: &str,
    claim: Option<String>,
    make: impl FnOnce() -> Secret,
) -> Result<Component, Error> {
    let key = labels::PASSWORD_KEY;
    let bot = owner.reference.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let ar = ApiResource::erase::<Secret>(&());
    let found = match ctx.children.lookup(&ar, ns, name) {
        Some(Known::Absent) => None,
        _ => api.get_opt(name).await?,
    };
    if let Some(s) = found {
        if !ours(&s.metadata, owner.reference, &bot) {
            return Ok(Component::Blocked(Problem {
                reason: "NameConflict",
                message: format!(
                    "Secret {name} exists and is not controlled by this ClawdBot; it is left untouched"
                ),
            }));
        }
        return Ok(match value(&s, key) {
            Some(_) => Component::Ready {
                digest: render::secrets_digest([(name, &s)]),
                secret: Box::new(s),
            },
            None => Component::Blocked(Problem {
                reason: "CredentialsInvalid",
                message: format!("Secret {name} has no {key:?} value"),
            }),
        });
    }
    if let Some(claim) = &claim {
        let pvc = ApiResource::erase::<PersistentVolumeClaim>(&());
        if metadata_of(ctx, &pvc, ns, claim).await?.is_some() {
            return Ok(Component::Blocked(Problem {
                reason: "CredentialsLost",
                message: format!(
                    "Secret {name} is gone but volume {claim} holds data written with its \
                     password; a new password would lock the bot out of it. Restore the Secret \
                     (from your backup of it), or delete the volume to start empty"
                ),
            }));
        }
    }
    let created = match api
        .create(
            &PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            },
            &make(),
        )
        .await
    {
        Ok(s) => s,
        // Created by a reconcile that raced this one: read it next time.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(Error::Build(format!(
                "Secret {name} appeared while creating it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.secrets.remember(ns, &created);
    let rv = created.metadata.resource_version.clone();
    ctx.children.note_write(&ar, ns, name, rv);
    owner.note(
        Change::Created,
        child_ref(&ar, ns, name, created.metadata.uid.clone()),
    );
    Ok(Component::Ready {
        digest: render::secrets_digest([(name, &created)]),
        secret: Box::new(created),
    })
}

/// A managed database whose StatefulSet was written for another PostgreSQL
/// major version than the image asked for, while its volume holds data.
async fn major_change(
    ctx: &Context,
    ns: &str,
    statefulset: &str,
    claim: &str,
    image: &str,
) -> Result<Option<Problem>, Error> {
    let ar = ApiResource::erase::<StatefulSet>(&());
    let annotations = metadata_of(ctx, &ar, ns, statefulset)
        .await?
        .and_then(|m| m.annotations);
    let Some(old) = annotations
        .as_ref()
        .and_then(|a| a.get(postgres::MAJOR_ANNOTATION))
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return Ok(None);
    };
    let Some(new) = postgres_major(image) else {
        return Ok(None);
    };
    if old == new {
        return Ok(None);
    }
    let pvc = ApiResource::erase::<PersistentVolumeClaim>(&());
    if metadata_of(ctx, &pvc, ns, claim).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(Problem {
        reason: "MajorVersionChange",
        message: format!(
            "spec.database.managed.image asks for PostgreSQL {new}, but volume {claim} holds data \
             written by PostgreSQL {old}, which {new} cannot read; the database is left on {old}. \
             Set an image of major version {old}, or dump and restore into a new volume \
             (docs/operator.md, \"Upgrading PostgreSQL\")"
        ),
    }))
}

async fn storage_class_exists(ctx: &Context, name: &str) -> Result<bool, Error> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    Ok(api.get_metadata_opt(name).await?.is_some())
}

/// The runtime's connection URLs for the managed components that are ready.
pub fn connection_urls(cb: &ClawdBot, state: &State) -> (Option<String>, Option<String>) {
    let redis = match &state.redis {
        Component::Ready { secret, .. } => {
            value(secret, labels::PASSWORD_KEY).map(|pw| redis::url(cb, &pw))
        }
        _ => None,
    };
    let database = match &state.database {
        Component::Ready { secret, .. } => {
            let user =
                value(secret, labels::USERNAME_KEY).unwrap_or_else(|| postgres::DB_USER.into());
            let db =
                value(secret, labels::DATABASE_KEY).unwrap_or_else(|| postgres::DB_NAME.into());
            value(secret, labels::PASSWORD_KEY).map(|pw| postgres::url(cb, &user, &pw, &db))
        }
        _ => None,
    };
    (redis, database)
}
