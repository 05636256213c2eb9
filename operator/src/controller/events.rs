//! Events about a ClawdBot (events.k8s.io/v1), with the child they concern.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::Context;

/// What a reconcile did to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Change::Created => ("Created", "Create"),
            Change::Updated => ("Updated", "Update"),
            Change::Deleted => ("Deleted", "Delete"),
        }
    }
}

/// The ClawdBot a reconcile works for, and the changes it made to children
/// so far. They are published as one Normal Event per kind of change when
/// the reconcile ends, not one per child: a new bot with managed Redis and
/// PostgreSQL creates fifteen objects, and kube's recorder scans every
/// event it cached (six minutes' worth) on each publish.
pub struct Owner<'a> {
    pub reference: &'a ObjectReference,
    changes: Mutex<Vec<(Change, String, ObjectReference)>>,
}

impl<'a> Owner<'a> {
    pub fn new(reference: &'a ObjectReference) -> Self {
        Owner {
            reference,
            changes: Mutex::new(Vec::new()),
        }
    }

    pub fn note(&self, change: Change, child: ObjectReference) {
        let what = format!(
            "{} {}",
            child.kind.as_deref().unwrap_or("object"),
            child.name.as_deref().unwrap_or("?")
        );
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((change, what, child));
    }

    /// Publishes the changes noted so far: "Created Deployment bot, Service
    /// bot, ..."; with a single child, that child is the Event's `related`.
    pub async fn publish(&self, ctx: &Context) {
        let changes = std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()));
        for kind in [Change::Created, Change::Updated, Change::Deleted] {
            let of_kind: Vec<_> = changes.iter().filter(|(c, _, _)| *c == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let (reason, action) = kind.words();
            let list = of_kind
                .iter()
                .map(|(_, what, _)| what.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let why = if kind == Change::Deleted {
                " (no longer in the spec)"
            } else {
                ""
            };
            let related = (of_kind.len() == 1).then(|| of_kind[0].2.clone());
            publish_about(
                ctx,
                self.reference,
                related,
                EventType::Normal,
                reason,
                format!("{reason} {list}{why}"),
                action,
            )
            .await;
        }
    }
}

/// The API server refuses an Event whose note is longer than this many bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// `child` becomes the event's `related` object, which also keeps events
/// about different children from being folded into one series.
pub async fn publish_about(
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
        note: Some(truncate_note(note)),
        action: action.into(),
        secondary: child,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

pub async fn warn(ctx: &Context, reference: &ObjectReference, reason: &str, note: &str) {
    tracing::warn!(object = ?reference.name, reason, note, "ClawdBot not reconciled as asked");
    publish_about(
        ctx,
        reference,
        None,
        EventType::Warning,
        reason,
        note.to_owned(),
        "Validate",
    )
    .await;
}

/// Cuts a note to at most MAX_NOTE_BYTES bytes on a character boundary
/// (Chinese text is three bytes a character), marking the cut with "…".
pub fn truncate_note(mut s: String) -> String {
    if s.len() <= MAX_NOTE_BYTES {
        return s;
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_in_1024_bytes_on_a_char_boundary() {
        let ascii = "a".repeat(2000);
        assert_eq!(truncate_note(ascii).len(), MAX_NOTE_BYTES);
        // 3-byte characters: a byte-counting cut would split one.
        let chinese = "配置错误".repeat(200);
        let cut = truncate_note(chinese);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.chars().filter(|c| *c == '配').count() > 80);
        let short = "短".to_owned();
        assert_eq!(truncate_note(short.clone()), short);
        // The old limit was 1000 characters: 1000 Chinese characters are 3000 bytes.
        assert!(truncate_note("错".repeat(1000)).len() <= MAX_NOTE_BYTES);
    }
}
