//! DingTalk signs only the callback's timestamp, not its body: one observed
//! callback's headers would carry any body for the whole freshness window.
//! So a verified callback's (timestamp, sign) pair is bound to the first
//! message it carried, in the delivery store all replicas share; the same
//! pair with another message is a replay. The platform's own retry of the
//! same message passes (and is then deduplicated by its msgId).

use std::time::Duration;

use http::HeaderMap;

use super::{Verifier, signature_key};
use crate::im::{InboundSink, Rejection, Verdict};

/// `verdict` unless its signature came with another message before
/// ([`Rejection::Replayed`]) or the binding could not be recorded
/// ([`Rejection::Unavailable`]: the platform retries).
pub async fn bind_to_message(
    headers: &HeaderMap,
    verdict: Result<Verdict, Rejection>,
    v: &Verifier,
    sink: &dyn InboundSink,
) -> Result<Verdict, Rejection> {
    let Ok(Verdict::Message(m)) = &verdict else {
        return verdict;
    };
    let Some(key) = signature_key(headers) else {
        return verdict;
    };
    // Kept for twice the window: a timestamp is fresh from a window before
    // now to a window after.
    let ttl = Duration::from_millis(u64::try_from(v.window_ms).unwrap_or(0).saturating_mul(2));
    match sink.bind_signature(&key, &m.delivery_id, ttl).await {
        Ok(true) => verdict,
        Ok(false) => Err(Rejection::Replayed),
        Err(e) => {
            tracing::warn!(channel = "dingtalk", error = %e, "signature binding not recorded; the platform will retry");
            Err(Rejection::Unavailable)
        }
    }
}
