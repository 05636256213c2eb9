//! How sessions are written in Redis: metadata and history entries as
//! compact JSON, times as epoch milliseconds. With encryption at rest on,
//! an entry's text is sealed, bound to its session and role.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::{Role, SessionError, SessionInfo, StoredMessage};
use crate::crypto::Keyring;

#[derive(Serialize, Deserialize)]
struct Meta {
    owner: Option<String>,
    user_id: Option<String>,
    created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    role: Role,
    content: String,
    at_ms: u64,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn from_epoch_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(super) fn meta(info: &SessionInfo) -> String {
    serde_json::to_string(&Meta {
        owner: info.owner.clone(),
        user_id: info.user_id.clone(),
        created_ms: epoch_ms(info.created_at),
    })
    .expect("meta serializes")
}

/// The session from its stored metadata; missing (expired) or unreadable
/// metadata is `NotFound`.
pub(super) fn info(id: &str, meta: Option<String>) -> Result<SessionInfo, SessionError> {
    let meta: Meta = meta
        .and_then(|m| serde_json::from_str(&m).ok())
        .ok_or(SessionError::NotFound)?;
    Ok(SessionInfo {
        id: id.to_owned(),
        owner: meta.owner,
        user_id: meta.user_id,
        created_at: from_epoch_ms(meta.created_ms),
    })
}

/// Associated data of an entry's text: a value copied into another
/// session's history, or from an answer to a question, fails to open.
fn aad(session: &str, role: Role) -> Vec<u8> {
    let role = match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    format!("session_history:{session}:{role}").into_bytes()
}

pub(super) fn entry(
    ring: &Keyring,
    session: &str,
    role: Role,
    content: String,
    at: SystemTime,
) -> String {
    let content = if ring.enabled() {
        ring.seal(&content, &aad(session, role))
    } else {
        content
    };
    serde_json::to_string(&Entry {
        role,
        content,
        at_ms: epoch_ms(at),
    })
    .expect("entry serializes")
}

/// Entries that do not parse (written by something else) are skipped; one
/// whose text cannot be opened (its key left the keyring, or it was
/// tampered with) stays in place with empty text, the reason in `error`,
/// and a warning naming the session.
pub(super) fn messages(ring: &Keyring, session: &str, raw: Vec<String>) -> Vec<StoredMessage> {
    raw.iter()
        .filter_map(|m| serde_json::from_str::<Entry>(m).ok())
        .map(|e| {
            let opened = if Keyring::is_sealed(&e.content) {
                ring.open(&e.content, &aad(session, e.role))
            } else {
                Ok(e.content)
            };
            let (content, error) = match opened {
                Ok(text) => (text, None),
                Err(why) => {
                    tracing::warn!(session_id = session, error = %why, "session history entry unreadable");
                    (String::new(), Some(why.to_string()))
                }
            };
            StoredMessage {
                role: e.role,
                content,
                created_at: from_epoch_ms(e.at_ms),
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_entries_round_trip() {
        let at = from_epoch_ms(1_700_000_000_123);
        let s = SessionInfo {
            id: "x".into(),
            owner: Some("web".into()),
            user_id: None,
            created_at: at,
        };
        assert_eq!(info("x", Some(meta(&s))).unwrap(), s);
        assert_eq!(info("x", None).err(), Some(SessionError::NotFound));
        assert_eq!(
            info("x", Some("{".into())).err(),
            Some(SessionError::NotFound)
        );
        let off = Keyring::off();
        let m = messages(
            &off,
            "x",
            vec![
                entry(&off, "x", Role::Assistant, "hi".into(), at),
                "not json".into(),
            ],
        );
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].role, m[0].content.as_str()), (Role::Assistant, "hi"));
        assert_eq!(m[0].created_at, at);
    }

    #[test]
    fn sealed_entries_open_only_in_their_session_and_role() {
        use clawdbot_config::encryption::{Algorithm, KeySpec};
        let ring = Keyring::new(
            &[KeySpec {
                id: "k".into(),
                algorithm: Algorithm::Sm4Gcm,
                key: vec![3; 16],
            }],
            Some("k".into()),
        );
        let at = from_epoch_ms(1);
        let stored = entry(&ring, "s1", Role::User, "转人工".into(), at);
        assert!(
            !stored.contains("转人工") && stored.contains("$cb1$k$"),
            "{stored}"
        );
        assert_eq!(
            messages(&ring, "s1", vec![stored.clone()])[0].content,
            "转人工"
        );
        // Moved to another session, or relabelled as the bot's answer.
        let moved = &messages(&ring, "s2", vec![stored.clone()])[0];
        assert_eq!(moved.content, "");
        assert!(
            moved
                .error
                .as_deref()
                .unwrap()
                .contains("failed authentication")
        );
        let relabelled = stored.replace("\"user\"", "\"assistant\"");
        assert_eq!(messages(&ring, "s1", vec![relabelled])[0].content, "");
        // Written before encryption was on: read as it is.
        let plain = entry(&Keyring::off(), "s1", Role::User, "hello".into(), at);
        assert_eq!(messages(&ring, "s1", vec![plain])[0].content, "hello");
    }
}
