//! API keys: who is calling and with what scope. Keys are kept as SHA-256
//! (or, with `encryption.digest: sm3`, SM3) digests and compared in
//! constant time, every key every time, so neither timing nor early exit
//! tells an attacker how close a guess was.

use clawdbot_config::encryption::DigestAlgorithm;
use clawdbot_config::{ApiKey, Scope};
use sha2::{Digest, Sha256};
use sm3::Sm3;
use subtle::ConstantTimeEq;

/// The authenticated caller, stored in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name; `None` when the API is open (no keys configured).
    pub key_name: Option<String>,
    pub scope: Scope,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            key_name: None,
            scope: Scope::User,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// Whether this caller may use a session created by `owner`.
    pub fn may_access(&self, owner: Option<&str>) -> bool {
        self.is_admin() || self.key_name.as_deref() == owner
    }
}

struct StoredKey {
    digest: [u8; 32],
    name: String,
    scope: Scope,
}

pub struct KeyStore {
    keys: Vec<StoredKey>,
    algorithm: DigestAlgorithm,
}

/// The 32-byte digest of `bytes` with `algorithm`.
fn digest(algorithm: DigestAlgorithm, bytes: &[u8]) -> [u8; 32] {
    match algorithm {
        DigestAlgorithm::Sha256 => Sha256::digest(bytes).into(),
        DigestAlgorithm::Sm3 => Sm3::digest(bytes).into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown_key",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "an API key is required: send `Authorization: Bearer <key>`",
            AuthFailure::Malformed => "the Authorization header must be `Bearer <key>`",
            AuthFailure::Unknown => "the API key is not valid",
        }
    }
}

impl KeyStore {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self::with_digest(keys, DigestAlgorithm::Sha256)
    }

    pub fn with_digest(keys: &[ApiKey], algorithm: DigestAlgorithm) -> Self {
        Self {
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, k)| StoredKey {
                    digest: digest(algorithm, k.key.expose().as_bytes()),
                    name: k.effective_name(i),
                    scope: k.scope,
                })
                .collect(),
            algorithm,
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        if self.is_open() {
            return Ok(Caller::anonymous());
        }
        let header = header.ok_or(AuthFailure::Missing)?;
        let token = bearer_token(header).ok_or(AuthFailure::Malformed)?;
        let digest = digest(self.algorithm, token);
        let mut found: Option<&StoredKey> = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
            .map(|k| Caller {
                key_name: Some(k.name.clone()),
                scope: k.scope,
            })
            .ok_or(AuthFailure::Unknown)
    }
}

fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdbot_config::Secret;

    fn store() -> KeyStore {
        KeyStore::new(&[
            ApiKey {
                key: Secret::new("user-key-123"),
                scope: Scope::User,
                name: Some("web".into()),
            },
            ApiKey {
                key: Secret::new("admin-key-456"),
                scope: Scope::Admin,
                name: None,
            },
        ])
    }

    #[test]
    fn accepts_configured_keys_with_their_scope() {
        let s = store();
        let c = s.authenticate(Some(b"Bearer user-key-123")).unwrap();
        assert_eq!(c.key_name.as_deref(), Some("web"));
        assert!(!c.is_admin());
        let a = s.authenticate(Some(b"bearer admin-key-456")).unwrap();
        assert!(a.is_admin());
        assert_eq!(a.key_name.as_deref(), Some("key-2"));
    }

    #[test]
    fn sm3_digests_match_gb_t_32905_and_authenticate() {
        // GB/T 32905-2016, example 1: SM3("abc").
        assert_eq!(
            hex::encode(digest(DigestAlgorithm::Sm3, b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_ne!(
            digest(DigestAlgorithm::Sm3, b"abc"),
            digest(DigestAlgorithm::Sha256, b"abc")
        );
        let keys = [ApiKey {
            key: Secret::new("user-key-123"),
            scope: Scope::User,
            name: Some("web".into()),
        }];
        let s = KeyStore::with_digest(&keys, DigestAlgorithm::Sm3);
        assert!(s.authenticate(Some(b"Bearer user-key-123")).is_ok());
        assert_eq!(
            s.authenticate(Some(b"Bearer user-key-124")),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn refuses_missing_malformed_and_unknown() {
        let s = store();
        assert_eq!(s.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(
            s.authenticate(Some(b"Basic abc")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            s.authenticate(Some(b"Bearer ")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            s.authenticate(Some(b"Bearer user-key-12")),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn open_mode_lets_everyone_in_as_user() {
        let s = KeyStore::new(&[]);
        assert_eq!(s.authenticate(None), Ok(Caller::anonymous()));
    }

    #[test]
    fn users_only_reach_their_own_sessions() {
        let me = Caller {
            key_name: Some("a".into()),
            scope: Scope::User,
        };
        assert!(me.may_access(Some("a")));
        assert!(!me.may_access(Some("b")));
        assert!(!me.may_access(None));
        let admin = Caller {
            key_name: Some("z".into()),
            scope: Scope::Admin,
        };
        assert!(admin.may_access(Some("b")));
    }
}
