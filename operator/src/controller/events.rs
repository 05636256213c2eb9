//! Events about a ClawdBot (events.k8s.io/v1), with the child they concern.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::Context;

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
