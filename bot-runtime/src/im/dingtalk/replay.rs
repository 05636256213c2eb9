//! DingTalk signs only the callback's timestamp, not its body: one observed
//! callback's headers would carry any body for the whole freshness window.
//! So a verified callback's (timestamp, sign) pair is bound to the first
//! message it carried, recorded with the delivery in the store all
//! replicas share; the same pair with another message is a replay. The
//! platform's own retry of the same message passes (and is then
//! deduplicated by its msgId).

use std::time::Duration;

use http::HeaderMap;

use super::{Verifier, signature_key};
use crate::im::SignatureBinding;

/// The binding a verified callback's message is accepted with. Kept for
/// twice the window: a timestamp is fresh from a window before now to a
/// window after.
pub fn binding(headers: &HeaderMap, v: &Verifier) -> Option<SignatureBinding> {
    Some(SignatureBinding {
        key: signature_key(headers)?,
        ttl: Duration::from_millis(u64::try_from(v.window_ms).unwrap_or(0).saturating_mul(2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_is_the_signature_for_twice_the_window() {
        let v = Verifier {
            app_secret: "s".into(),
            window_ms: 3_600_000,
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            binding(&h, &v),
            None,
            "no signature headers, nothing to bind"
        );
        h.insert("timestamp", "1700000000000".parse().unwrap());
        h.insert("sign", "abc=".parse().unwrap());
        let b = binding(&h, &v).unwrap();
        assert_eq!(b.ttl, Duration::from_secs(7200));
        assert_eq!(Some(b.key.clone()), signature_key(&h));
        h.insert("sign", "abd=".parse().unwrap());
        assert_ne!(
            binding(&h, &v).unwrap().key,
            b.key,
            "another signature, another key"
        );
    }
}
