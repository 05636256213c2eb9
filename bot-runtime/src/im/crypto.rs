//! Helpers shared by the platforms: constant-time comparison, signature and
//! freshness checks, AES-256-CBC, base64.
//!
//! Everything here is total: bad input gives a [`CryptoError`], never a panic.

use aes::Aes256;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use clawdbot_config::Secret;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Rejection;

/// The AES block; CBC works on whole blocks of it.
const AES_BLOCK: usize = 16;

/// Why a decryption (or a base64 decoding) failed. Turned into
/// [`Rejection::Undecryptable`] at the protocol edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not valid base64")]
    Base64,
    #[error("ciphertext is empty or not a whole number of AES blocks")]
    NotBlockAligned,
    #[error("bad PKCS#7 padding")]
    BadPadding,
}

impl CryptoError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base64 => "not valid base64",
            Self::NotBlockAligned => "ciphertext is empty or not a whole number of AES blocks",
            Self::BadPadding => "bad PKCS#7 padding",
        }
    }
}

impl From<CryptoError> for Rejection {
    fn from(e: CryptoError) -> Self {
        Rejection::Undecryptable(e.as_str())
    }
}

/// The PKCS#7 block the plaintext is padded to. Feishu pads to the AES block
/// (16); WeCom pads to 32 (pad values 1..=32), which standard PKCS#7
/// unpadding for AES would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadBlock {
    B16,
    B32,
}

impl PadBlock {
    pub fn size(self) -> usize {
        match self {
            Self::B16 => 16,
            Self::B32 => 32,
        }
    }
}

/// Equal in constant time (for equal lengths; a length mismatch returns at
/// once, which only leaks the length of a public format).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

pub fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Strict standard base64 (canonical, padded), as the platforms send it.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, CryptoError> {
    STANDARD.decode(s).map_err(|_| CryptoError::Base64)
}

/// Lenient standard base64: padding optional, non-zero trailing bits
/// allowed. WeCom's 43-character EncodingAESKey usually ends in a character
/// with non-zero trailing bits, which the strict engine refuses (Tencent's
/// samples decode it with lenient decoders).
pub fn b64_decode_lenient(s: &str) -> Result<Vec<u8>, CryptoError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).map_err(|_| CryptoError::Base64)
}

/// A header's value as text, trimmed; `None` when absent, empty or not
/// visible ASCII. Names are matched case-insensitively.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty()).then_some(v)
}

/// `|now - ts| <= window`, without overflow on hostile timestamps.
pub fn within_window(now_ms: i64, ts_ms: i64, window_ms: i64) -> bool {
    (i128::from(now_ms) - i128::from(ts_ms)).abs() <= i128::from(window_ms)
}

/// A decimal timestamp in seconds, as milliseconds.
pub fn secs_to_ms(secs: &str) -> Option<i64> {
    secs.trim().parse::<i64>().ok()?.checked_mul(1000)
}

/// A configured window in seconds, as milliseconds (saturating).
pub fn window_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A configured secret, still wrapped; `None` when unset or empty.
pub fn configured_secret(secret: &Option<Secret>) -> Option<Secret> {
    secret.as_ref().filter(|s| !s.is_empty()).cloned()
}

/// A configured secret's text; `None` when unset or empty.
pub fn configured(secret: &Option<Secret>) -> Option<&str> {
    secret
        .as_ref()
        .map(Secret::expose)
        .filter(|s| !s.is_empty())
}

/// `given` must equal `expected` (compared in constant time), else
/// `BadSignature`; then the timestamp must be readable (`ts_ms`) and within
/// `window_ms` of `now_ms`, else `Stale`.
pub fn check_signed(
    expected: &str,
    given: &str,
    ts_ms: Option<i64>,
    now_ms: i64,
    window_ms: i64,
) -> Result<(), Rejection> {
    if !ct_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(Rejection::BadSignature);
    }
    let ts_ms = ts_ms.ok_or(Rejection::Stale)?;
    if !within_window(now_ms, ts_ms, window_ms) {
        return Err(Rejection::Stale);
    }
    Ok(())
}

/// Appends PKCS#7 padding to a multiple of `block` (always at least one byte).
pub fn pkcs7_pad(mut data: Vec<u8>, block: PadBlock) -> Vec<u8> {
    let n = block.size();
    let pad = n - data.len() % n;
    // pad is 1..=32, so it fits a byte.
    data.resize(data.len() + pad, pad as u8);
    data
}

/// Strips PKCS#7 padding to a multiple of `block`: the last byte `p` must be
/// in `1..=block` and the last `p` bytes must all equal `p`.
pub fn pkcs7_unpad(data: &[u8], block: PadBlock) -> Result<&[u8], CryptoError> {
    let Some(&last) = data.last() else {
        return Err(CryptoError::BadPadding);
    };
    let p = usize::from(last);
    if p == 0 || p > block.size() || p > data.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, pad) = data.split_at(data.len() - p);
    // Check every pad byte without an early exit.
    let bad = pad.iter().fold(0u8, |acc, &b| acc | (b ^ last));
    if bad != 0 {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

/// AES-256-CBC decryption, then PKCS#7 unpadding to `block`.
pub fn aes256_cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
    block: PadBlock,
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK) {
        return Err(CryptoError::NotBlockAligned);
    }
    let mut dec = cbc::Decryptor::<Aes256>::new(key.into(), iv.into());
    let mut buf = ciphertext.to_vec();
    for chunk in buf.chunks_exact_mut(AES_BLOCK) {
        dec.decrypt_block_mut(GenericArray::from_mut_slice(chunk));
    }
    let len = pkcs7_unpad(&buf, block)?.len();
    buf.truncate(len);
    Ok(buf)
}

/// PKCS#7 padding to `block`, then AES-256-CBC encryption. Returns the
/// ciphertext alone (callers prepend the IV where their format wants it).
pub fn aes256_cbc_encrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    plaintext: &[u8],
    block: PadBlock,
) -> Vec<u8> {
    let mut enc = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    let mut buf = pkcs7_pad(plaintext.to_vec(), block);
    // Both pad blocks are multiples of the AES block, so chunks are exact.
    for chunk in buf.chunks_exact_mut(AES_BLOCK) {
        enc.encrypt_block_mut(GenericArray::from_mut_slice(chunk));
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const IV: [u8; 16] = [9; 16];

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn pads_to_the_requested_block() {
        assert_eq!(pkcs7_pad(vec![1; 16], PadBlock::B16).len(), 32);
        assert_eq!(pkcs7_pad(vec![1; 16], PadBlock::B32).len(), 32);
        assert_eq!(pkcs7_pad(vec![], PadBlock::B32), vec![32; 32]);
        assert_eq!(pkcs7_pad(vec![1; 31], PadBlock::B32).last(), Some(&1));
    }

    #[test]
    fn unpad_refuses_bad_padding() {
        assert_eq!(
            pkcs7_unpad(&[], PadBlock::B16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(
            pkcs7_unpad(&[1, 0], PadBlock::B16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(
            pkcs7_unpad(&[1, 17], PadBlock::B16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(
            pkcs7_unpad(&[3, 2, 3], PadBlock::B16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(
            pkcs7_unpad(&[4, 4, 4], PadBlock::B16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(pkcs7_unpad(&[9, 2, 2], PadBlock::B16), Ok(&[9u8][..]));
        // 17..=32 is fine for WeCom's block only.
        let data = vec![20u8; 20];
        assert!(pkcs7_unpad(&data, PadBlock::B16).is_err());
        assert_eq!(pkcs7_unpad(&data, PadBlock::B32), Ok(&[][..]));
    }

    #[test]
    fn decrypt_refuses_partial_blocks() {
        for len in [0, 1, 15, 17, 31] {
            assert_eq!(
                aes256_cbc_decrypt(&KEY, &IV, &vec![0; len], PadBlock::B16),
                Err(CryptoError::NotBlockAligned)
            );
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_trims() {
        let mut h = HeaderMap::new();
        h.insert("x-slack-signature", " v0=ab ".parse().unwrap());
        h.insert("empty", "".parse().unwrap());
        assert_eq!(header_str(&h, "X-Slack-Signature"), Some("v0=ab"));
        assert_eq!(header_str(&h, "empty"), None);
        assert_eq!(header_str(&h, "missing"), None);
        assert_eq!(header_str(&h, "not a header name"), None);
    }

    #[test]
    fn window_survives_extreme_values() {
        assert!(within_window(1000, 0, 1000));
        assert!(!within_window(1001, 0, 1000));
        assert!(!within_window(i64::MAX, i64::MIN, i64::MAX));
        assert!(within_window(0, 0, 0));
        assert_eq!(secs_to_ms("12"), Some(12_000));
        assert_eq!(secs_to_ms(&i64::MAX.to_string()), None);
        assert_eq!(secs_to_ms("1.5"), None);
    }

    #[test]
    fn lenient_base64_takes_wecom_keys() {
        let key = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
        assert!(b64_decode(&format!("{key}=")).is_err());
        assert_eq!(
            b64_decode_lenient(&format!("{key}=")).map(|k| k.len()),
            Ok(32)
        );
        assert_eq!(b64_decode_lenient(key).map(|k| k.len()), Ok(32));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..200), wide in any::<bool>()) {
            let block = if wide { PadBlock::B32 } else { PadBlock::B16 };
            let ct = aes256_cbc_encrypt(&KEY, &IV, &data, block);
            prop_assert_eq!(ct.len() % block.size(), 0);
            prop_assert_eq!(aes256_cbc_decrypt(&KEY, &IV, &ct, block), Ok(data));
        }

        #[test]
        fn random_ciphertexts_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = aes256_cbc_decrypt(&KEY, &IV, &data, PadBlock::B16);
            let _ = aes256_cbc_decrypt(&KEY, &IV, &data, PadBlock::B32);
            let _ = pkcs7_unpad(&data, PadBlock::B32);
        }

        #[test]
        fn random_base64_never_panics(s in ".{0,80}") {
            let _ = b64_decode(&s);
            let _ = b64_decode_lenient(&s);
        }
    }
}

/// Helpers for the platforms' protocol tests.
#[cfg(test)]
pub(crate) mod testutil {
    use http::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;
    use proptest::sample::Index;

    use crate::im::{Inbound, Rejection, Verdict};

    /// A random request for fuzzing `verify`: up to three headers, each
    /// named one of `known` or at random, with up to `max_value` random
    /// bytes as its value (those that make no valid header are dropped),
    /// and up to 255 random body bytes.
    pub(crate) fn random_request(
        known: &[&str],
        max_value: usize,
    ) -> impl Strategy<Value = (HeaderMap, Vec<u8>)> {
        let known: Vec<String> = known.iter().map(|k| k.to_ascii_lowercase()).collect();
        // Each known name as likely as a random one.
        let name = prop_oneof![
            known.len() as u32 => proptest::sample::select(known),
            1 => "[a-z-]{1,12}",
        ];
        let value = proptest::collection::vec(any::<u8>(), 0..max_value);
        let headers = proptest::collection::vec((name, value), 0..4).prop_map(to_headers);
        (headers, proptest::collection::vec(any::<u8>(), 0..256))
    }

    fn to_headers(pairs: Vec<(String, Vec<u8>)>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(&v),
            ) {
                h.append(k, v);
            }
        }
        h
    }

    /// The message of a verdict that must be one.
    pub(crate) fn message_of(v: Result<Verdict, Rejection>) -> Inbound {
        match v {
            Ok(Verdict::Message(m)) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// `bytes` with bit `bit` of the byte at `pos` flipped.
    pub(crate) fn flip_bit(mut bytes: Vec<u8>, pos: Index, bit: u8) -> Vec<u8> {
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        bytes
    }

    /// Sets header `name` to `value`, or removes it where `value` is not a
    /// valid header value (a refusal either way).
    pub(crate) fn set_or_remove(h: &mut HeaderMap, name: &'static str, value: &[u8]) {
        match HeaderValue::from_bytes(value) {
            Ok(v) => {
                h.insert(name, v);
            }
            Err(_) => {
                h.remove(name);
            }
        }
    }
}
