//! Feishu / Lark: event verification, decryption and parsing (v2 and v1
//! schemas), reply bodies, custom-bot signing.

use std::borrow::Cow;

use clawdbot_config::{FeishuConfig, Secret};
use http::HeaderMap;
use serde_json::{Value, json};

use super::event::{self, Envelope};

use crate::im::crypto::{
    PadBlock, aes256_cbc_decrypt, aes256_cbc_encrypt, b64_decode, b64_encode, check_signed,
    configured_secret, ct_eq, header_str, hmac_sha256, secs_to_ms, sha256, window_ms,
};
use crate::im::{Inbound, Platform, Rejection, ReplyTo, Verdict};

const SIGNATURE: &str = "X-Lark-Signature";
const TIMESTAMP: &str = "X-Lark-Request-Timestamp";
const NONCE: &str = "X-Lark-Request-Nonce";
const RECEIVE_V1: &str = "im.message.receive_v1";

/// What event verification needs. At least one of the token and the key is
/// set (see [`Verifier::from_config`]); with neither, [`verify`] refuses all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub verification_token: Option<Secret>,
    pub encrypt_key: Option<Secret>,
    pub window_ms: i64,
}

impl Verifier {
    /// `None` when neither a verification token nor an encrypt key is set.
    pub fn from_config(cfg: &FeishuConfig) -> Option<Self> {
        let v = Self {
            verification_token: configured_secret(&cfg.verification_token),
            encrypt_key: configured_secret(&cfg.encrypt_key),
            window_ms: window_ms(cfg.timestamp_window_secs),
        };
        (v.verification_token.is_some() || v.encrypt_key.is_some()).then_some(v)
    }
}

fn aes_key(encrypt_key: &str) -> [u8; 32] {
    sha256(encrypt_key.as_bytes())
}

/// Decrypts an `encrypt` field: base64 of `iv(16) | AES-256-CBC(PKCS#7)`,
/// keyed by SHA-256 of the encrypt key.
pub fn decrypt(encrypt_key: &str, encrypt_b64: &str) -> Result<Vec<u8>, Rejection> {
    let raw = b64_decode(encrypt_b64)?;
    let Some((iv, ciphertext)) = raw.split_first_chunk::<16>() else {
        return Err(Rejection::Undecryptable("shorter than the IV"));
    };
    Ok(aes256_cbc_decrypt(
        &aes_key(encrypt_key),
        iv,
        ciphertext,
        PadBlock::B16,
    )?)
}

/// The inverse of [`decrypt`], for tests and benchmarks.
pub fn encrypt(encrypt_key: &str, plaintext: &[u8], iv: [u8; 16]) -> String {
    let mut raw = iv.to_vec();
    raw.extend(aes256_cbc_encrypt(
        &aes_key(encrypt_key),
        &iv,
        plaintext,
        PadBlock::B16,
    ));
    b64_encode(&raw)
}

/// `hex(SHA-256(timestamp + nonce + encrypt_key + body))`: plain SHA-256,
/// not an HMAC.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut data =
        Vec::with_capacity(timestamp.len() + nonce.len() + encrypt_key.len() + body.len());
    data.extend_from_slice(timestamp.as_bytes());
    data.extend_from_slice(nonce.as_bytes());
    data.extend_from_slice(encrypt_key.as_bytes());
    data.extend_from_slice(body);
    hex::encode(sha256(&data))
}

/// Verifies an event callback on its raw bytes, then parses it.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    v: &Verifier,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let token = v.verification_token.as_ref().map(Secret::expose);
    match v
        .encrypt_key
        .as_ref()
        .map(Secret::expose)
        .filter(|k| !k.is_empty())
    {
        Some(key) if header_str(headers, SIGNATURE).is_some() => {
            verify_signed(headers, body, key, token, v.window_ms, now_ms)
        }
        Some(key) => verify_unsigned_handshake(body, key, token),
        // Plaintext events carry nothing but the token to check.
        None if token.is_some() => parse_event(body, token),
        None => Err(Rejection::BadToken),
    }
}

/// A signed (encrypted) event: signature and freshness before any parsing.
fn verify_signed(
    headers: &HeaderMap,
    body: &[u8],
    key: &str,
    token: Option<&str>,
    window_ms: i64,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let given = header_str(headers, SIGNATURE).ok_or(Rejection::BadSignature)?;
    let ts = header_str(headers, TIMESTAMP).ok_or(Rejection::Stale)?;
    let nonce = header_str(headers, NONCE).ok_or(Rejection::BadSignature)?;
    let expected = signature(ts, nonce, key, body);
    let given = given.to_ascii_lowercase();
    check_signed(&expected, &given, secs_to_ms(ts), now_ms, window_ms)?;
    let plain = decrypt(key, &encrypt_field(body)?)?;
    parse_event(&plain, token)
}

/// Feishu sends `url_verification` unsigned, even with an encrypt key. Only
/// that may pass here. Every failure reads the same (BadSignature) so this
/// path cannot serve as a padding oracle for captured ciphertexts.
fn verify_unsigned_handshake(
    body: &[u8],
    key: &str,
    token: Option<&str>,
) -> Result<Verdict, Rejection> {
    let plain = encrypt_field(body)
        .and_then(|e| decrypt(key, &e))
        .map_err(|_| Rejection::BadSignature)?;
    let event = event::object::<Envelope>(&plain)
        .ok()
        .flatten()
        .ok_or(Rejection::BadSignature)?;
    if event.kind.get() != Some("url_verification") {
        return Err(Rejection::BadSignature);
    }
    parse_envelope(&event, token)
}

/// The `encrypt` string of an encrypted body.
fn encrypt_field(body: &[u8]) -> Result<Cow<'_, str>, Rejection> {
    #[derive(serde::Deserialize)]
    struct Encrypted<'a> {
        #[serde(borrow)]
        encrypt: Cow<'a, str>,
    }
    serde_json::from_slice::<Encrypted>(body)
        .map(|e| e.encrypt)
        .map_err(|_| Rejection::malformed("expected {\"encrypt\": ...}"))
}

/// Parses a decrypted or plaintext event. `expected_token` is checked
/// against v2 `header.token` or v1 top-level `token`; long-connection mode
/// passes `None`.
pub fn parse_event(json: &[u8], expected_token: Option<&str>) -> Result<Verdict, Rejection> {
    let event = event::object::<Envelope>(json)
        .map_err(|e| Rejection::malformed(format!("not JSON: {e}")))?
        .ok_or_else(|| Rejection::malformed("not a JSON object"))?;
    parse_envelope(&event, expected_token)
}

fn parse_envelope(v: &Envelope, expected_token: Option<&str>) -> Result<Verdict, Rejection> {
    let header = v.header.0.as_ref();
    let v2 = v.schema.get() == Some("2.0");
    if let Some(expected) = expected_token {
        let token = if v2 {
            header.and_then(|h| h.token.get())
        } else {
            v.token.get()
        };
        if !ct_eq(token.unwrap_or_default().as_bytes(), expected.as_bytes()) {
            return Err(Rejection::BadToken);
        }
    }
    if v.kind.get() == Some("url_verification") {
        let challenge = required(&v.challenge, "challenge")?;
        return Ok(Verdict::Handshake {
            content_type: "application/json",
            body: json!({ "challenge": challenge }).to_string(),
        });
    }
    if v2 { parse_v2(v) } else { parse_v1(v) }
}

fn parse_v2(v: &Envelope) -> Result<Verdict, Rejection> {
    let header = v.header.0.as_ref();
    let event_type = header
        .and_then(|h| h.event_type.get())
        .ok_or_else(|| missing("header.event_type"))?;
    let event_id = header
        .and_then(|h| h.event_id.get())
        .ok_or_else(|| missing("header.event_id"))?;
    if event_type != RECEIVE_V1 {
        return Ok(Verdict::Ignored("event type not handled"));
    }
    let event = v.event.0.as_ref().ok_or_else(|| missing("event"))?;
    let sender = event.sender.0.as_ref();
    if sender.and_then(|s| s.sender_type.get()) == Some("app") {
        return Ok(Verdict::Ignored("message from a bot"));
    }
    let msg = event
        .message
        .0
        .as_ref()
        .ok_or_else(|| missing("event.message"))?;
    let message_id = required(&msg.message_id, "message.message_id")?;
    let chat_id = required(&msg.chat_id, "message.chat_id")?;
    let open_id = sender
        .and_then(|s| s.sender_id.0.as_ref())
        .and_then(|id| id.open_id.get())
        .ok_or_else(|| missing("sender.open_id"))?;

    let Some(raw) = message_text(msg)? else {
        return Ok(Verdict::Ignored("message type without text"));
    };
    let text = strip_mentions(&raw, &msg.mentions.0);
    message(event_id, message_id, chat_id, open_id, text)
}

/// Text of a `text` or `post` message; `Ok(None)` for other types.
fn message_text(msg: &event::Message) -> Result<Option<String>, Rejection> {
    let kind = msg.message_type.get().unwrap_or_default();
    if kind != "text" && kind != "post" {
        return Ok(None);
    }
    // `content` is a JSON document inside a string.
    let content = required(&msg.content, "message.content")?;
    let not_json = |_| Rejection::malformed("message.content is not JSON");
    if kind == "text" {
        let content = event::object::<event::TextContent>(content.as_bytes()).map_err(not_json)?;
        let text = content.as_ref().and_then(|c| c.text.get());
        return Ok(Some(text.unwrap_or_default().to_owned()));
    }
    let content: Value = serde_json::from_str(content).map_err(not_json)?;
    Ok(Some(post_text(&content)))
}

/// Joins a rich-text post: title, then each paragraph's text runs. Takes
/// the flat form of events and the locale-wrapped form of the send API.
fn post_text(content: &Value) -> String {
    let post = post_body(content).unwrap_or(content);
    let mut lines = Vec::new();
    if let Some(title) = str_at(post, "/title") {
        lines.push(title.to_owned());
    }
    for para in post
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let line: String = para
            .as_array()
            .into_iter()
            .flatten()
            // `at` runs are mentions; `text`, `a`, `code_block`... carry `text`.
            .filter(|el| str_at(el, "/tag") != Some("at"))
            .filter_map(|el| el.get("text")?.as_str())
            .collect();
        lines.push(line);
    }
    lines.join("\n")
}

/// The locale body of `{"zh_cn": {...}}` or `{"post": {"zh_cn": {...}}}`.
fn post_body(content: &Value) -> Option<&Value> {
    if content.get("content").is_some() {
        return None;
    }
    let locales = content.get("post").unwrap_or(content).as_object()?;
    ["zh_cn", "en_us", "ja_jp"]
        .iter()
        .find_map(|l| locales.get(*l))
        .or_else(|| locales.values().find(|v| v.get("content").is_some()))
}

/// Drops mention keys (`@_user_1`) and one space after each, then trims.
/// Longer keys first, so `@_user_1` never eats into `@_user_10`.
fn strip_mentions<K: AsRef<str>>(text: &str, keys: &[K]) -> String {
    let mut keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    let mut out = Cow::Borrowed(text);
    for k in keys.into_iter().filter(|k| !k.is_empty()) {
        if out.contains(k) {
            out = Cow::Owned(out.replace(&format!("{k} "), "").replace(k, ""));
        }
    }
    out.trim().to_owned()
}

/// v1 schema (`uuid`, `event.type`): the legacy `message` event.
fn parse_v1(v: &Envelope) -> Result<Verdict, Rejection> {
    let uuid = required(&v.uuid, "uuid")?;
    let event = v.event.0.as_ref().ok_or_else(|| missing("event"))?;
    if event.kind.get() != Some("message") {
        return Ok(Verdict::Ignored("event type not handled"));
    }
    let kind = event.msg_type.get().unwrap_or_default();
    if kind != "text" && kind != "post" {
        return Ok(Verdict::Ignored("message type without text"));
    }
    let message_id = required(&event.open_message_id, "open_message_id")?;
    let chat_id = required(&event.open_chat_id, "open_chat_id")?;
    let open_id = required(&event.open_id, "open_id")?;
    let text = match event.text_without_at_bot.get() {
        Some(t) => strip_at_tags(t),
        None => strip_at_tags(event.text.get().unwrap_or_default()),
    };
    message(uuid, message_id, chat_id, open_id, text)
}

/// Removes v1 `<at open_id="...">@name</at>` tags, then trims.
fn strip_at_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<at ") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</at>") {
            Some(end) => rest = rest[start + end + "</at>".len()..].trim_start_matches(' '),
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

fn message(
    event_id: &str,
    message_id: &str,
    chat_id: &str,
    open_id: &str,
    text: String,
) -> Result<Verdict, Rejection> {
    if text.is_empty() {
        return Ok(Verdict::Ignored("empty message"));
    }
    Ok(Verdict::Message(Box::new(Inbound {
        platform: Platform::Feishu,
        delivery_id: event_id.to_owned(),
        message_id: Some(message_id.to_owned()),
        conversation_id: chat_id.to_owned(),
        user_id: open_id.to_owned(),
        text,
        reply: ReplyTo::Feishu {
            message_id: message_id.to_owned(),
            chat_id: chat_id.to_owned(),
        },
    })))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)?.as_str().filter(|s| !s.is_empty())
}

fn required<'t>(text: &'t event::Text, field: &str) -> Result<&'t str, Rejection> {
    text.get().ok_or_else(|| missing(field))
}

fn missing(field: &str) -> Rejection {
    Rejection::malformed(format!("missing {field}"))
}

// ---- Bodies we send ----

/// `POST /open-apis/im/v1/messages/{id}/reply` with text; `content` is a
/// JSON string.
pub fn text_reply_body(text: &str) -> Value {
    json!({"msg_type": "text", "content": json!({ "text": text }).to_string()})
}

/// A reply as an interactive card (JSON 2.0) holding one Markdown element.
pub fn card_reply_body(markdown: &str) -> Value {
    let card = json!({
        "schema": "2.0",
        "body": {"elements": [{"tag": "markdown", "content": markdown}]},
    });
    json!({"msg_type": "interactive", "content": card.to_string()})
}

/// `POST /open-apis/auth/v3/tenant_access_token/internal`.
pub fn tenant_token_body(app_id: &str, app_secret: &str) -> Value {
    json!({"app_id": app_id, "app_secret": app_secret})
}

/// Custom-bot sign: `base64(HMAC-SHA256(key = timestamp + "\n" + secret,
/// message = empty))`, timestamp in seconds. Not DingTalk's formula.
pub fn custom_bot_sign(timestamp_secs: i64, secret: &str) -> String {
    let key = format!("{timestamp_secs}\n{secret}");
    b64_encode(&hmac_sha256(key.as_bytes(), b""))
}

/// A custom-bot text message, signed when `signing` = (timestamp in
/// seconds, secret) is given.
pub fn custom_bot_body(text: &str, signing: Option<(i64, &str)>) -> Value {
    let mut body = json!({"msg_type": "text", "content": {"text": text}});
    if let Some((ts, secret)) = signing {
        body["timestamp"] = json!(ts.to_string());
        body["sign"] = json!(custom_bot_sign(ts, secret));
    }
    body
}

/// The error in an Open API or custom-bot answer: `{"code","msg"}` with a
/// non-zero code (older custom bots: `StatusCode`/`StatusMessage`). `None`
/// for a success or a body that names no error (check the HTTP status).
pub fn api_error(body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let (code, msg) = match v.get("code") {
        Some(code) => (code, v.get("msg")),
        None => (v.get("StatusCode")?, v.get("StatusMessage")),
    };
    let code = code.as_i64().unwrap_or(-1);
    let msg = msg.and_then(Value::as_str).unwrap_or_default();
    (code != 0).then(|| (code, msg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::crypto::testutil::{flip_bit, message_of, random_request, set_or_remove};
    use proptest::prelude::*;

    const KEY: &str = "encrypt-key";
    const TOKEN: &str = "verif-token";
    const NOW: i64 = 1_700_000_000_000;
    const IV: [u8; 16] = *b"0123456789abcdef";

    fn verifier(key: Option<&str>) -> Verifier {
        Verifier {
            verification_token: Some(TOKEN.into()),
            encrypt_key: key.map(Into::into),
            window_ms: 8 * 3_600_000,
        }
    }

    fn v2_text(text: &str, mentions: Value) -> Value {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": "5e3702a84e847582be8db7fb73283c02",
                "event_type": "im.message.receive_v1",
                "create_time": "1608725989000",
                "token": TOKEN,
                "app_id": "cli_9f5343c580712544",
                "tenant_key": "2ca1d211f64f6438"
            },
            "event": {
                "sender": {
                    "sender_id": {
                        "union_id": "on_8ed6aa67826108097d9ee143816345",
                        "user_id": "e33ggbyz",
                        "open_id": "ou_84aad35d084aa403a838cf73ee18467"
                    },
                    "sender_type": "user",
                    "tenant_key": "736588c9260f175e"
                },
                "message": {
                    "message_id": "om_5ce6d572455d361153b7cb51da133945",
                    "root_id": "",
                    "parent_id": "",
                    "create_time": "1609073151345",
                    "chat_id": "oc_5ce6d572455d361153b7xx51da133945",
                    "chat_type": "group",
                    "message_type": "text",
                    "content": json!({ "text": text }).to_string(),
                    "mentions": mentions
                }
            }
        })
    }

    fn bot_mention() -> Value {
        json!([{
            "key": "@_user_1",
            "id": {"open_id": "ou_bot", "union_id": "on_bot", "user_id": ""},
            "name": "Helper",
            "tenant_key": "736588c9260f175e"
        }])
    }

    fn signed(body: &[u8], ts_secs: i64) -> HeaderMap {
        let ts = ts_secs.to_string();
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP, ts.parse().unwrap());
        h.insert(NONCE, "nonce-1".parse().unwrap());
        h.insert(
            SIGNATURE,
            signature(&ts, "nonce-1", KEY, body).parse().unwrap(),
        );
        h
    }

    fn encrypted(event: &Value) -> Vec<u8> {
        let e = encrypt(KEY, event.to_string().as_bytes(), IV);
        json!({ "encrypt": e }).to_string().into_bytes()
    }

    #[test]
    fn decrypts_the_sdk_vector() {
        let e = "bZ3L7yh6m3Fkuffl4g+3uGjIHnhOm5fVZbKVuyT8t7tcd5ABMYm8l28/X900ZL3knZ7n+sCREu/H2WnIzft0amC7+xWqNH8o25IU63N4BnZWfHh+4hyG76QPd19vkw2bPJCx9aqxK8Nz+xqFNbk0RdgyWhmgd30jSxHtcQXAllkI7FMpGpOCteJad3bLXPDBQIV/xkCtKICCS7Z63gakpxZCLaRZ3qCXP1fapHh+LBIupxenrU6ysc7I3nHmjmKie41IiWwS5puG4zQHhVbq6KWLcgWm/3NBZOPQy53ucMu75SXA55I7jarVLZXWUcqBGrcgE3vouWbtwgZuzmoTQl0GSh5VYSVvpW992BuGxUWj0XjPYdICJm6Cr7xouNXwMcdb7N8caVdkdSZeEnswG19qSyDoQhklwzNGW0yiaayulBqJNjfge/G5V3401c2XaIuAeEIo+QQ4RSNpRGfnHkbu/j55FGQAGWjpuBNaIwZbaUoVP3NkGP+vM5rpEDe3sL2GN+Xsd+g9yBs7FqdMV8mXTGgLjCqjrPrke5/km76Q3Pe6KPs2YexMRG4MkSx3xUTzZnNn7zIzShPcjeSwBd2pxk6ht5N+fzueZdxl6Oo=";
        let plain = decrypt("1212121212", e).unwrap();
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["challenge"], "1212");
        assert_eq!(v["type"], "url_verification");
        // Unsigned, it passes verify as a handshake (its v2 header.token is "v").
        let body = json!({ "encrypt": e }).to_string();
        let mut v = Verifier {
            verification_token: Some("v".into()),
            encrypt_key: Some("1212121212".into()),
            window_ms: 1,
        };
        assert_eq!(
            verify(&HeaderMap::new(), body.as_bytes(), &v, NOW),
            Ok(Verdict::Handshake {
                content_type: "application/json",
                body: r#"{"challenge":"1212"}"#.into()
            })
        );
        v.verification_token = Some("other".into());
        assert_eq!(
            verify(&HeaderMap::new(), body.as_bytes(), &v, NOW),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn config_needs_a_token_or_a_key() {
        use clawdbot_config::Secret;
        assert_eq!(Verifier::from_config(&FeishuConfig::default()), None);
        let cfg = FeishuConfig {
            encrypt_key: Some(Secret::new("k")),
            verification_token: Some(Secret::new("")),
            ..Default::default()
        };
        assert_eq!(
            Verifier::from_config(&cfg),
            Some(Verifier {
                verification_token: None,
                encrypt_key: Some("k".into()),
                window_ms: 8 * 3_600_000
            })
        );
    }

    #[test]
    fn decrypts_the_docs_vector() {
        assert_eq!(
            decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn decrypt_refuses_bad_input() {
        let undecryptable =
            |r: Result<Vec<u8>, Rejection>| matches!(r, Err(Rejection::Undecryptable(_)));
        assert!(undecryptable(decrypt(KEY, "not base64!")));
        assert!(undecryptable(decrypt(KEY, &b64_encode(&[0; 16]))));
        assert!(undecryptable(decrypt(KEY, &b64_encode(&[0; 40]))));
        // A wrong key garbles the padding (or, rarely, the plaintext).
        let e = encrypt(KEY, b"hello world", IV);
        assert_ne!(decrypt("other", &e).ok(), Some(b"hello world".to_vec()));
        // Pad values above 16 are refused.
        let mut raw = IV.to_vec();
        raw.extend(aes256_cbc_encrypt(&aes_key(KEY), &IV, b"", PadBlock::B32));
        assert_eq!(
            decrypt(KEY, &b64_encode(&raw)),
            Err(Rejection::Undecryptable("bad PKCS#7 padding"))
        );
    }

    #[test]
    fn custom_bot_sign_matches_the_vector() {
        assert_eq!(
            custom_bot_sign(1599360473, "this is secret"),
            "/eYKrXQBzTjUZJ3s6NX16VxGbTwmK7AEs8/FnvC1CSw="
        );
        assert_eq!(
            custom_bot_body("hi", Some((1599360473, "this is secret"))),
            json!({
                "timestamp": "1599360473",
                "sign": "/eYKrXQBzTjUZJ3s6NX16VxGbTwmK7AEs8/FnvC1CSw=",
                "msg_type": "text",
                "content": {"text": "hi"}
            })
        );
        assert_eq!(
            custom_bot_body("hi", None),
            json!({"msg_type": "text", "content": {"text": "hi"}})
        );
    }

    #[test]
    fn accepts_a_signed_encrypted_v2_message() {
        let body = encrypted(&v2_text("@_user_1 hello there", bot_mention()));
        let m = message_of(verify(
            &signed(&body, NOW / 1000),
            &body,
            &verifier(Some(KEY)),
            NOW,
        ));
        assert_eq!(
            m,
            Inbound {
                platform: Platform::Feishu,
                delivery_id: "5e3702a84e847582be8db7fb73283c02".into(),
                message_id: Some("om_5ce6d572455d361153b7cb51da133945".into()),
                conversation_id: "oc_5ce6d572455d361153b7xx51da133945".into(),
                user_id: "ou_84aad35d084aa403a838cf73ee18467".into(),
                text: "hello there".into(),
                reply: ReplyTo::Feishu {
                    message_id: "om_5ce6d572455d361153b7cb51da133945".into(),
                    chat_id: "oc_5ce6d572455d361153b7xx51da133945".into(),
                },
            }
        );
    }

    #[test]
    fn signed_path_refuses_forgeries() {
        let v = verifier(Some(KEY));
        let body = encrypted(&v2_text("hi", json!([])));
        let ts = NOW / 1000;
        let good = signed(&body, ts);
        // Wrong signature.
        let mut h = good.clone();
        h.insert(
            SIGNATURE,
            signature(&ts.to_string(), "nonce-1", "other", &body)
                .parse()
                .unwrap(),
        );
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::BadSignature));
        // Missing nonce or timestamp while signed.
        let mut h = good.clone();
        h.remove(NONCE);
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::BadSignature));
        let mut h = good.clone();
        h.remove(TIMESTAMP);
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::Stale));
        // Tampered ciphertext.
        let mut tampered = body.clone();
        tampered[20] ^= 1;
        assert_eq!(
            verify(&good, &tampered, &v, NOW),
            Err(Rejection::BadSignature)
        );
        // Stale: the window is in ms, the header in seconds.
        let old = ts - 8 * 3600 - 1;
        assert_eq!(
            verify(&signed(&body, old), &body, &v, NOW),
            Err(Rejection::Stale)
        );
        assert!(verify(&signed(&body, ts - 8 * 3600), &body, &v, NOW).is_ok());
        // Uppercase hex is the same signature.
        let mut h = good.clone();
        let upper = signature(&ts.to_string(), "nonce-1", KEY, &body).to_ascii_uppercase();
        h.insert(SIGNATURE, upper.parse().unwrap());
        assert!(verify(&h, &body, &v, NOW).is_ok());
    }

    #[test]
    fn signed_path_still_checks_the_token() {
        let mut event = v2_text("hi", json!([]));
        event["header"]["token"] = json!("wrong");
        let body = encrypted(&event);
        assert_eq!(
            verify(&signed(&body, NOW / 1000), &body, &verifier(Some(KEY)), NOW),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn signed_body_must_be_encrypted() {
        let body = v2_text("hi", json!([])).to_string().into_bytes();
        assert!(matches!(
            verify(&signed(&body, NOW / 1000), &body, &verifier(Some(KEY)), NOW),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn unsigned_encrypted_requests_may_only_be_url_verification() {
        let v = verifier(Some(KEY));
        let hs = json!({"challenge": "ch-1", "token": TOKEN, "type": "url_verification"});
        assert_eq!(
            verify(&HeaderMap::new(), &encrypted(&hs), &v, NOW),
            Ok(Verdict::Handshake {
                content_type: "application/json",
                body: r#"{"challenge":"ch-1"}"#.into()
            })
        );
        let wrong = json!({"challenge": "ch-1", "token": "nope", "type": "url_verification"});
        assert_eq!(
            verify(&HeaderMap::new(), &encrypted(&wrong), &v, NOW),
            Err(Rejection::BadToken)
        );
        // A real event without a signature.
        let event = encrypted(&v2_text("hi", json!([])));
        assert_eq!(
            verify(&HeaderMap::new(), &event, &v, NOW),
            Err(Rejection::BadSignature)
        );
        // Garbage and bad padding read the same.
        for body in [&b"{}"[..], b"x", br#"{"encrypt":"AAAA"}"#] {
            assert_eq!(
                verify(&HeaderMap::new(), body, &v, NOW),
                Err(Rejection::BadSignature)
            );
        }
        let mut raw = IV.to_vec();
        raw.extend(aes256_cbc_encrypt(&aes_key(KEY), &IV, b"", PadBlock::B32));
        let bad_pad = json!({ "encrypt": b64_encode(&raw) }).to_string();
        assert_eq!(
            verify(&HeaderMap::new(), bad_pad.as_bytes(), &v, NOW),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn plaintext_url_verification_and_token() {
        let v = verifier(None);
        let hs = json!({"challenge": "abc", "token": TOKEN, "type": "url_verification"});
        assert_eq!(
            verify(&HeaderMap::new(), hs.to_string().as_bytes(), &v, NOW),
            Ok(Verdict::Handshake {
                content_type: "application/json",
                body: r#"{"challenge":"abc"}"#.into()
            })
        );
        let wrong = json!({"challenge": "abc", "token": "x", "type": "url_verification"});
        assert_eq!(
            verify(&HeaderMap::new(), wrong.to_string().as_bytes(), &v, NOW),
            Err(Rejection::BadToken)
        );
        let no_token = json!({"challenge": "abc", "type": "url_verification"});
        assert_eq!(
            verify(&HeaderMap::new(), no_token.to_string().as_bytes(), &v, NOW),
            Err(Rejection::BadToken)
        );
        let mut bad = v2_text("hi", json!([]));
        bad["header"]["token"] = json!("x");
        assert_eq!(
            verify(&HeaderMap::new(), bad.to_string().as_bytes(), &v, NOW),
            Err(Rejection::BadToken)
        );
        let ok = v2_text("hi", json!([]));
        assert_eq!(
            message_of(verify(
                &HeaderMap::new(),
                ok.to_string().as_bytes(),
                &v,
                NOW
            ))
            .text,
            "hi"
        );
    }

    #[test]
    fn nothing_configured_refuses_everything() {
        let v = Verifier {
            verification_token: None,
            encrypt_key: None,
            window_ms: 1,
        };
        let ok = v2_text("hi", json!([]));
        assert_eq!(
            verify(&HeaderMap::new(), ok.to_string().as_bytes(), &v, NOW),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn strips_every_listed_mention() {
        let mentions = json!([
            {"key": "@_user_1", "name": "Helper"},
            {"key": "@_user_10", "name": "Ten"}
        ]);
        let m = message_of(parse_event(
            v2_text("@_user_1  ask @_user_10 about it", mentions)
                .to_string()
                .as_bytes(),
            None,
        ));
        assert_eq!(m.text, "ask about it");
        assert_eq!(
            parse_event(
                v2_text("@_user_1", bot_mention()).to_string().as_bytes(),
                None
            ),
            Ok(Verdict::Ignored("empty message"))
        );
    }

    #[test]
    fn reads_post_messages_flat_and_locale_wrapped() {
        let flat = json!({
            "title": "Plan",
            "content": [
                [{"tag": "at", "user_id": "@_user_1", "user_name": "Helper"},
                 {"tag": "text", "text": " step one "},
                 {"tag": "a", "text": "link", "href": "https://e.x"}],
                [{"tag": "img", "image_key": "img_1"}, {"tag": "text", "text": "step two"}]
            ]
        });
        let mut e = v2_text("", bot_mention());
        e["event"]["message"]["message_type"] = json!("post");
        e["event"]["message"]["content"] = json!(flat.to_string());
        let m = message_of(parse_event(e.to_string().as_bytes(), None));
        assert_eq!(m.text, "Plan\n step one link\nstep two");

        let wrapped = json!({"zh_cn": {"title": "", "content": [[{"tag": "text", "text": "你好 @_user_1"}]]}});
        e["event"]["message"]["content"] = json!(wrapped.to_string());
        assert_eq!(
            message_of(parse_event(e.to_string().as_bytes(), None)).text,
            "你好"
        );
    }

    #[test]
    fn ignores_bots_other_types_and_other_events() {
        let mut e = v2_text("hi", json!([]));
        e["event"]["sender"]["sender_type"] = json!("app");
        assert_eq!(
            parse_event(e.to_string().as_bytes(), None),
            Ok(Verdict::Ignored("message from a bot"))
        );
        let mut e = v2_text("hi", json!([]));
        e["event"]["message"]["message_type"] = json!("image");
        e["event"]["message"]["content"] = json!(r#"{"image_key":"img_x"}"#);
        assert_eq!(
            parse_event(e.to_string().as_bytes(), None),
            Ok(Verdict::Ignored("message type without text"))
        );
        let mut e = v2_text("hi", json!([]));
        e["header"]["event_type"] = json!("im.chat.member.bot.added_v1");
        assert_eq!(
            parse_event(e.to_string().as_bytes(), None),
            Ok(Verdict::Ignored("event type not handled"))
        );
    }

    #[test]
    fn malformed_events_name_the_field() {
        let mut e = v2_text("hi", json!([]));
        e["event"]["message"]
            .as_object_mut()
            .unwrap()
            .remove("chat_id");
        assert_eq!(
            parse_event(e.to_string().as_bytes(), None),
            Err(Rejection::malformed("missing message.chat_id"))
        );
        let mut e = v2_text("hi", json!([]));
        e["event"]["message"]["content"] = json!("{not json");
        assert!(matches!(
            parse_event(e.to_string().as_bytes(), None),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            parse_event(b"[]", None),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn reads_v1_message_events() {
        let v1 = json!({
            "uuid": "41b5f371157e3d5341b38b20396e77a3",
            "token": TOKEN,
            "ts": "1550038209.428520",
            "type": "event_callback",
            "event": {
                "type": "message",
                "app_id": "cli_xxx",
                "tenant_key": "xxx",
                "root_id": "",
                "parent_id": "",
                "open_chat_id": "oc_5ce6d572455d361153b7cb51da133945",
                "chat_type": "group",
                "msg_type": "text",
                "open_id": "ou_18eac85d35a26f989317ad4f02e8bbbb",
                "open_message_id": "om_36e6f7e9b7b8a1c4e0f2a3b4c5d6e7f8",
                "is_mention": true,
                "text": "<at open_id=\"ou_bot\">@Helper</at> how are you",
                "text_without_at_bot": "how are you <at open_id=\"ou_x\">@Li</at>"
            }
        });
        let m = message_of(verify(
            &HeaderMap::new(),
            v1.to_string().as_bytes(),
            &verifier(None),
            NOW,
        ));
        assert_eq!(m.delivery_id, "41b5f371157e3d5341b38b20396e77a3");
        assert_eq!(m.text, "how are you");
        assert_eq!(m.conversation_id, "oc_5ce6d572455d361153b7cb51da133945");
        assert_eq!(m.user_id, "ou_18eac85d35a26f989317ad4f02e8bbbb");
        assert_eq!(
            m.message_id.as_deref(),
            Some("om_36e6f7e9b7b8a1c4e0f2a3b4c5d6e7f8")
        );

        let mut no_strip = v1.clone();
        no_strip["event"]
            .as_object_mut()
            .unwrap()
            .remove("text_without_at_bot");
        assert_eq!(
            message_of(parse_event(no_strip.to_string().as_bytes(), Some(TOKEN))).text,
            "how are you"
        );
        let mut other = v1.clone();
        other["event"]["type"] = json!("add_bot");
        assert_eq!(
            parse_event(other.to_string().as_bytes(), Some(TOKEN)),
            Ok(Verdict::Ignored("event type not handled"))
        );
        let mut wrong = v1;
        wrong["token"] = json!("nope");
        assert_eq!(
            parse_event(wrong.to_string().as_bytes(), Some(TOKEN)),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn at_tag_stripping_survives_odd_input() {
        assert_eq!(strip_at_tags("<at open_id=\"x\">@a</at>"), "");
        assert_eq!(strip_at_tags("hi <at unterminated"), "hi <at unterminated");
        assert_eq!(strip_at_tags("a <at x>@b</at> c"), "a c");
    }

    #[test]
    fn builds_bodies() {
        let t = text_reply_body("say \"hi\"");
        assert_eq!(t["msg_type"], "text");
        assert_eq!(
            serde_json::from_str::<Value>(t["content"].as_str().unwrap()).unwrap(),
            json!({"text": "say \"hi\""})
        );
        let c = card_reply_body("**bold**");
        assert_eq!(c["msg_type"], "interactive");
        let card: Value = serde_json::from_str(c["content"].as_str().unwrap()).unwrap();
        assert_eq!(card["schema"], "2.0");
        assert_eq!(
            card["body"]["elements"][0],
            json!({"tag": "markdown", "content": "**bold**"})
        );
        assert_eq!(
            tenant_token_body("cli_a", "sec"),
            json!({"app_id": "cli_a", "app_secret": "sec"})
        );
    }

    #[test]
    fn reads_api_errors() {
        assert_eq!(api_error(br#"{"code":0,"msg":"success","data":{}}"#), None);
        assert_eq!(
            api_error(br#"{"code":19021,"msg":"sign match fail"}"#),
            Some((19021, "sign match fail".into()))
        );
        assert_eq!(
            api_error(br#"{"StatusCode":0,"StatusMessage":"success"}"#),
            None
        );
        assert_eq!(api_error(b"nope"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_requests_never_panic(
            (h, bytes) in random_request(&[SIGNATURE, TIMESTAMP, NONCE], 48),
        ) {
            // With a key, random bytes cannot carry a valid signature.
            prop_assert!(verify(&h, &bytes, &verifier(Some(KEY)), NOW).is_err());
            let _ = verify(&h, &bytes, &verifier(None), NOW);
            let _ = parse_event(&bytes, None);
            let _ = parse_event(&bytes, Some(TOKEN));
            let _ = api_error(&bytes);
        }

        #[test]
        fn random_ciphertexts_never_panic(s in "[A-Za-z0-9+/=]{0,120}") {
            let _ = decrypt(KEY, &s);
        }

        #[test]
        fn random_event_shapes_never_panic(
            text in ".{0,40}",
            kind in prop_oneof![Just("text"), Just("post"), Just("file")],
            content in ".{0,40}",
        ) {
            let mut e = v2_text(&text, bot_mention());
            e["event"]["message"]["message_type"] = json!(kind);
            let _ = parse_event(e.to_string().as_bytes(), None);
            e["event"]["message"]["content"] = json!(content);
            let _ = parse_event(e.to_string().as_bytes(), None);
        }

        #[test]
        fn round_trips(plain in proptest::collection::vec(any::<u8>(), 0..300), iv in any::<[u8; 16]>(), key in ".{0,20}") {
            prop_assert_eq!(decrypt(&key, &encrypt(&key, &plain, iv)), Ok(plain));
        }

        #[test]
        fn flipped_signed_bodies_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let body = encrypted(&v2_text("hi", json!([])));
            let h = signed(&body, NOW / 1000);
            let tampered = flip_bit(body, pos, bit);
            prop_assert_eq!(verify(&h, &tampered, &verifier(Some(KEY)), NOW), Err(Rejection::BadSignature));
        }

        #[test]
        fn flipped_signatures_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let body = encrypted(&v2_text("hi", json!([])));
            let ts = (NOW / 1000).to_string();
            let sig = flip_bit(signature(&ts, "nonce-1", KEY, &body).into_bytes(), pos, bit);
            let mut h = signed(&body, NOW / 1000);
            set_or_remove(&mut h, SIGNATURE, &sig);
            let r = verify(&h, &body, &verifier(Some(KEY)), NOW);
            // A flip to the other case of a hex letter is the same signature.
            let same = String::from_utf8_lossy(&sig).eq_ignore_ascii_case(&signature(&ts, "nonce-1", KEY, &body));
            if !same {
                prop_assert_eq!(r, Err(Rejection::BadSignature));
            }
        }

        #[test]
        fn flipped_unsigned_bodies_never_become_messages(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let body = encrypted(&v2_text("hi", json!([])));
            let tampered = flip_bit(body, pos, bit);
            let r = verify(&HeaderMap::new(), &tampered, &verifier(Some(KEY)), NOW);
            prop_assert!(!matches!(r, Ok(Verdict::Message(_))));
        }
    }
}
