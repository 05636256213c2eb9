//! How sessions are written in Redis: metadata and history entries as
//! compact JSON, times as epoch milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::{Role, SessionError, SessionInfo, StoredMessage};

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

pub(super) fn entry(role: Role, content: String, at: SystemTime) -> String {
    serde_json::to_string(&Entry {
        role,
        content,
        at_ms: epoch_ms(at),
    })
    .expect("entry serializes")
}

/// Entries that do not parse (written by something else) are skipped.
pub(super) fn messages(raw: Vec<String>) -> Vec<StoredMessage> {
    raw.iter()
        .filter_map(|m| serde_json::from_str::<Entry>(m).ok())
        .map(|e| StoredMessage {
            role: e.role,
            content: e.content,
            created_at: from_epoch_ms(e.at_ms),
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
        let m = messages(vec![
            entry(Role::Assistant, "hi".into(), at),
            "not json".into(),
        ]);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].role, m[0].content.as_str()), (Role::Assistant, "hi"));
        assert_eq!(m[0].created_at, at);
    }
}
