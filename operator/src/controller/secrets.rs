//! Secrets a bot reads: their content digest (so a changed credential rolls
//! the pods), read again only when a Secret's resourceVersion changed, and
//! the Secret -> ClawdBots index that maps a Secret's watch event to the
//! bots that read it, kept up to date by each reconcile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource};
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

use super::children::Meta;
use super::{Context, Error};
use crate::encryption::{Keyring, keyring_of};
use crate::render;

type Key = (String, String);

#[derive(Default)]
pub struct SecretCache {
    store: RwLock<Option<Store<Meta>>>,
    digests: Mutex<HashMap<Key, Read>>,
    index: Mutex<Index>,
}

/// What was read of one Secret version: its resourceVersion, content
/// digest, the keys that hold a value (for the channel checks) and, per
/// key, what its value is as an encryption keyring: the key ids, or why it
/// is not one (never key bytes: the values themselves are not kept).
#[derive(Clone)]
struct Read {
    rv: String,
    digest: String,
    keys: BTreeSet<String>,
    keyrings: BTreeMap<String, Keyring>,
}

impl Read {
    fn of(name: &str, rv: String, s: &Secret) -> Self {
        let data = s.data.iter().flatten().filter(|(_, v)| !v.0.is_empty());
        let strings = s
            .string_data
            .iter()
            .flatten()
            .filter(|(_, v)| !v.is_empty());
        Self {
            rv,
            digest: render::secrets_digest([(name, s)]),
            keyrings: data
                .clone()
                .map(|(k, v)| (k.clone(), keyring_of(&v.0)))
                .chain(
                    strings
                        .clone()
                        .map(|(k, v)| (k.clone(), keyring_of(v.as_bytes()))),
                )
                .collect(),
            keys: data
                .map(|(k, _)| k.clone())
                .chain(strings.map(|(k, _)| k.clone()))
                .collect(),
        }
    }
}

#[derive(Default)]
struct Index {
    by_secret: HashMap<Key, BTreeSet<String>>,
    by_bot: HashMap<Key, Vec<String>>,
}

impl SecretCache {
    pub fn set_store(&self, s: Option<Store<Meta>>) {
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// What the Secret cache holds of a Secret: None without a cache,
    /// Some(None) when the Secret does not exist, else its resourceVersion.
    fn cached_version(&self, ns: &str, name: &str) -> Option<Option<String>> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let ar = ApiResource::erase::<Secret>(&());
        let key = ObjectRef::<Meta>::new_with(name, ar).within(ns);
        Some(
            store
                .as_ref()?
                .get(&key)
                .and_then(|m| m.metadata.resource_version.clone()),
        )
    }

    /// Records the digest of a Secret the operator just wrote, so reading
    /// it back is not needed (the cache may not show it yet).
    pub fn remember(&self, ns: &str, s: &Secret) {
        let (Some(name), Some(rv)) = (s.metadata.name.clone(), s.metadata.resource_version.clone())
        else {
            return;
        };
        let read = Read::of(&name, rv, s);
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_owned(), name), read);
    }

    /// The keys with a value of a Secret [`SecretCache::digest`] read (or
    /// the operator wrote); None when it has not been read.
    pub fn keys(&self, ns: &str, name: &str) -> Option<BTreeSet<String>> {
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_owned(), name.to_owned()))
            .map(|r| r.keys.clone())
    }

    /// Key `key` of a Secret [`SecretCache::digest`] read, as a keyring:
    /// None when the Secret was not read, Some(None) when it has no such
    /// key.
    pub fn keyring(&self, ns: &str, name: &str, key: &str) -> Option<Option<Keyring>> {
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_owned(), name.to_owned()))
            .map(|r| r.keyrings.get(key).cloned())
    }

    /// Digest of the named Secrets' contents and the names of missing ones.
    pub async fn digest(
        &self,
        ctx: &Context,
        ns: &str,
        names: &[String],
    ) -> Result<(String, Vec<String>), Error> {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let mut parts = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            let key = (ns.to_owned(), name.clone());
            let known = self
                .digests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            let cached = match (self.cached_version(ns, name), known) {
                // The cache has this version: its digest is known.
                (Some(Some(rv)), Some(r)) if r.rv == rv => Some(r.digest),
                // Written by us a moment ago; the cache has not seen it yet.
                (Some(None), Some(r)) => Some(r.digest),
                (Some(None), None) => {
                    missing.push(name.clone());
                    continue;
                }
                _ => None,
            };
            let digest = match cached {
                Some(d) => d,
                None => match api.get_opt(name).await? {
                    None => {
                        missing.push(name.clone());
                        continue;
                    }
                    Some(s) => {
                        let read = Read::of(
                            name,
                            s.metadata.resource_version.clone().unwrap_or_default(),
                            &s,
                        );
                        let d = read.digest.clone();
                        self.digests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, read);
                        d
                    }
                },
            };
            parts.push(format!("{name}={digest}"));
        }
        parts.sort();
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        Ok((hex::encode(&h.finalize()[..16]), missing))
    }

    /// Drops the digest of a Secret that was deleted.
    pub fn forget(&self, ns: &str, name: &str) {
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.to_owned(), name.to_owned()));
    }

    /// Records which Secrets a bot reads (or creates).
    pub fn index(&self, ns: &str, bot: &str, secrets: Vec<String>) {
        let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let bot_key = (ns.to_owned(), bot.to_owned());
        if ix.by_bot.get(&bot_key) == Some(&secrets) {
            return;
        }
        if let Some(old) = ix.by_bot.remove(&bot_key) {
            for s in old {
                let k = (ns.to_owned(), s);
                if let Some(set) = ix.by_secret.get_mut(&k) {
                    set.remove(bot);
                    if set.is_empty() {
                        ix.by_secret.remove(&k);
                    }
                }
            }
        }
        for s in &secrets {
            ix.by_secret
                .entry((ns.to_owned(), s.clone()))
                .or_default()
                .insert(bot.to_owned());
        }
        ix.by_bot.insert(bot_key, secrets);
    }

    pub fn forget_bot(&self, ns: &str, bot: &str) {
        self.index(ns, bot, Vec::new());
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_bot
            .remove(&(ns.to_owned(), bot.to_owned()));
    }

    /// The bots that read this Secret.
    pub fn bots_for(&self, ns: &str, secret: &str) -> Vec<String> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_secret
            .get(&(ns.to_owned(), secret.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_secret_leaves_no_digest_behind() {
        let c = SecretCache::default();
        let mut s = Secret::default();
        s.metadata.name = Some("keys".into());
        s.metadata.resource_version = Some("7".into());
        c.remember("ns", &s);
        assert_eq!(c.digests.lock().unwrap().len(), 1);
        c.forget("ns", "keys");
        assert!(c.digests.lock().unwrap().is_empty());
    }

    #[test]
    fn the_index_follows_each_reconcile() {
        let c = SecretCache::default();
        c.index("ns", "a", vec!["model".into(), "shared".into()]);
        c.index("ns", "b", vec!["shared".into()]);
        assert_eq!(c.bots_for("ns", "shared"), vec!["a", "b"]);
        assert_eq!(c.bots_for("other", "shared"), Vec::<String>::new());
        c.index("ns", "a", vec!["model2".into()]);
        assert_eq!(c.bots_for("ns", "shared"), vec!["b"]);
        assert!(c.bots_for("ns", "model").is_empty());
        c.forget_bot("ns", "b");
        assert!(c.bots_for("ns", "shared").is_empty());
    }
}
