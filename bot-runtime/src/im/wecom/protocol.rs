//! WeCom: callback signature, AES-256-CBC message crypto (WXBizMsgCrypt
//! layout), XML parsing, and message-send / group-robot bodies.

use std::collections::HashMap;

use clawdbot_config::WeComConfig;
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::im::crypto::{
    PadBlock, aes256_cbc_decrypt, aes256_cbc_encrypt, b64_decode, b64_decode_lenient, b64_encode,
    check_signed, configured, ct_eq, secs_to_ms,
};
use crate::im::{Inbound, Platform, Rejection, ReplyTo, Verdict};

/// Callback credentials: the Token, the key from the EncodingAESKey, and
/// the receiver id every plaintext must end with (the CorpID).
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub token: String,
    pub aes_key: [u8; 32],
    pub receive_id: String,
}

// Credentials stay out of logs.
impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("token", &"***")
            .field("aes_key", &"***")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl Crypto {
    /// `encoding_aes_key` is the 43-character EncodingAESKey: base64 of the
    /// 32-byte key without its `=`. Errors are config errors, for startup.
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("wecom token is empty".into());
        }
        if encoding_aes_key.len() != 43 {
            return Err("wecom encoding_aes_key must be 43 characters".into());
        }
        let key = b64_decode_lenient(&format!("{encoding_aes_key}="))
            .map_err(|_| "wecom encoding_aes_key is not base64".to_owned())?;
        let aes_key: [u8; 32] = key
            .try_into()
            .map_err(|_| "wecom encoding_aes_key does not decode to 32 bytes".to_owned())?;
        Ok(Self {
            token: token.to_owned(),
            aes_key,
            receive_id: receive_id.to_owned(),
        })
    }

    /// `None` when the callback is not configured (token, EncodingAESKey or
    /// CorpID unset); `Some(Err)` when the key is unusable.
    pub fn from_config(cfg: &WeComConfig) -> Option<Result<Self, String>> {
        let token = configured(&cfg.token)?;
        let key = configured(&cfg.encoding_aes_key)?;
        let corp = cfg.corp_id.as_deref().filter(|c| !c.is_empty())?;
        Some(Self::new(token, key, corp))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0; 16];
        iv.copy_from_slice(&self.aes_key[..16]);
        iv
    }

    /// Decrypts an `Encrypt` / `echostr` value: `random(16) | len(u32 BE) |
    /// msg | receive_id`, padded to 32.
    pub fn decrypt(&self, b64: &str) -> Result<String, Rejection> {
        let raw = b64_decode(b64)?;
        let plain = aes256_cbc_decrypt(&self.aes_key, &self.iv(), &raw, PadBlock::B32)?;
        let Some((_random, rest)) = plain.split_first_chunk::<16>() else {
            return Err(Rejection::Undecryptable("too short"));
        };
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            return Err(Rejection::Undecryptable("too short"));
        };
        let len = usize::try_from(u32::from_be_bytes(*len))
            .map_err(|_| Rejection::Undecryptable("length overflow"))?;
        if len > rest.len() {
            return Err(Rejection::Undecryptable("length overflow"));
        }
        let (msg, receive_id) = rest.split_at(len);
        if !ct_eq(receive_id, self.receive_id.as_bytes()) {
            return Err(Rejection::BadToken);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| Rejection::Undecryptable("not UTF-8"))
    }

    /// The inverse of [`Crypto::decrypt`] (passive replies, tests).
    pub fn encrypt(&self, msg: &str, random16: [u8; 16]) -> String {
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        let mut plain = Vec::with_capacity(20 + msg.len() + self.receive_id.len());
        plain.extend_from_slice(&random16);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(self.receive_id.as_bytes());
        b64_encode(&aes256_cbc_encrypt(
            &self.aes_key,
            &self.iv(),
            &plain,
            PadBlock::B32,
        ))
    }
}

/// `hex(SHA-1(concat(sorted([token, timestamp, nonce, encrypt]))))`.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The callback query, URL-decoded; the first of repeated keys wins.
fn query_params(query: &str) -> Result<HashMap<String, String>, Rejection> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| Rejection::malformed("unreadable query string"))?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    Ok(map)
}

/// Checks `msg_signature` over `encrypt` and the `timestamp` (seconds).
fn check_signature(
    q: &HashMap<String, String>,
    encrypt: &str,
    c: &Crypto,
    window_ms: i64,
    now_ms: i64,
) -> Result<(), Rejection> {
    let given = q
        .get("msg_signature")
        .filter(|s| !s.is_empty())
        .ok_or(Rejection::BadSignature)?;
    let ts = q
        .get("timestamp")
        .filter(|s| !s.is_empty())
        .ok_or(Rejection::Stale)?;
    let nonce = q.get("nonce").ok_or(Rejection::BadSignature)?;
    let expected = signature(&c.token, ts, nonce, encrypt);
    let given = given.to_ascii_lowercase();
    check_signed(&expected, &given, secs_to_ms(ts), now_ms, window_ms)
}

/// URL verification (GET): answer the decrypted `echostr`, bare.
pub fn verify_url(
    query: &str,
    c: &Crypto,
    window_ms: i64,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let q = query_params(query)?;
    // A `+` left unencoded in the URL decodes to a space; base64 has none.
    let echostr = q
        .get("echostr")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Rejection::malformed("missing echostr"))?
        .replace(' ', "+");
    check_signature(&q, &echostr, c, window_ms, now_ms)?;
    Ok(Verdict::Handshake {
        content_type: "text/plain",
        body: c.decrypt(&echostr)?,
    })
}

/// A message callback (POST): `<xml>...<Encrypt>` signed in the query.
pub fn verify_message(
    query: &str,
    body: &[u8],
    c: &Crypto,
    window_ms: i64,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let q = query_params(query)?;
    let outer = xml_fields(body)?;
    let encrypt = outer
        .get("Encrypt")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Rejection::malformed("missing Encrypt"))?;
    check_signature(&q, encrypt, c, window_ms, now_ms)?;
    let inner = c.decrypt(encrypt)?;
    parse_message(&xml_fields(inner.as_bytes())?)
}

/// A decrypted message: text messages are answered, the rest ignored.
fn parse_message(f: &HashMap<String, String>) -> Result<Verdict, Rejection> {
    let field = |k: &str| f.get(k).map(String::as_str).filter(|s| !s.is_empty());
    match field("MsgType") {
        Some("text") => {}
        Some("event") => return Ok(Verdict::Ignored("event")),
        Some(_) => return Ok(Verdict::Ignored("message type without text")),
        None => return Err(Rejection::malformed("missing MsgType")),
    }
    let msg_id = field("MsgId").ok_or_else(|| Rejection::malformed("missing MsgId"))?;
    let from = field("FromUserName").ok_or_else(|| Rejection::malformed("missing FromUserName"))?;
    let text = field("Content").unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(Verdict::Ignored("empty message"));
    }
    Ok(Verdict::Message(Box::new(Inbound {
        platform: Platform::Wecom,
        delivery_id: msg_id.to_owned(),
        message_id: None,
        // App callbacks are one-to-one: the chat is the sender.
        conversation_id: from.to_owned(),
        user_id: from.to_owned(),
        text: text.to_owned(),
        reply: ReplyTo::Wecom {
            to_user: from.to_owned(),
        },
    })))
}

/// The text of the root element's children (`<xml><A>..</A><B>..</B></xml>`),
/// CDATA or escaped text alike. A DOCTYPE or a non-predefined entity is
/// refused: nothing is ever expanded. Deeper elements are skipped.
fn xml_fields(xml: &[u8]) -> Result<HashMap<String, String>, Rejection> {
    let xml = std::str::from_utf8(xml).map_err(|_| Rejection::malformed("XML is not UTF-8"))?;
    let mut reader = Reader::from_str(xml);
    let mut fields = HashMap::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut current: Option<(String, String)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Rejection::malformed(format!("bad XML: {e}")))?;
        match event {
            Event::DocType(_) => return Err(Rejection::malformed("XML DOCTYPE refused")),
            Event::Start(e) => {
                depth += 1;
                match depth {
                    1 => roots += 1,
                    2 => current = Some((e.name().0.to_owned(), String::new())),
                    _ => {}
                }
            }
            Event::Empty(e) => match depth {
                0 => roots += 1,
                1 => {
                    fields
                        .entry(e.name().0.to_owned())
                        .or_insert_with(String::new);
                }
                _ => {}
            },
            Event::End(_) => {
                if depth == 2
                    && let Some((name, text)) = current.take()
                {
                    fields.entry(name).or_insert(text);
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => push_text(&mut current, depth, &t.xml10_content()),
            Event::CData(t) => push_text(&mut current, depth, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => predefined_entity(&r)
                        .ok_or_else(|| Rejection::malformed("XML entity refused"))?,
                    Err(_) => return Err(Rejection::malformed("bad XML character reference")),
                };
                push_text(&mut current, depth, ch.encode_utf8(&mut [0; 4]));
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if roots != 1 || depth != 0 {
        return Err(Rejection::malformed(
            "XML needs exactly one closed root element",
        ));
    }
    Ok(fields)
}

fn push_text(current: &mut Option<(String, String)>, depth: usize, s: &str) {
    if depth == 2
        && let Some((_, text)) = current
    {
        text.push_str(s);
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

// ---- Bodies we send ----

/// `agentid` is an integer in the API; the config holds it as text.
fn agent_id_value(agent_id: &str) -> Value {
    agent_id
        .trim()
        .parse::<i64>()
        .map_or_else(|_| json!(agent_id), |n| json!(n))
}

/// `POST /cgi-bin/message/send` with text.
pub fn send_text_body(agent_id: &str, to_user: &str, content: &str) -> Value {
    json!({
        "touser": to_user,
        "msgtype": "text",
        "agentid": agent_id_value(agent_id),
        "text": {"content": content},
    })
}

/// `POST /cgi-bin/message/send` with Markdown (WeCom's subset).
pub fn send_markdown_body(agent_id: &str, to_user: &str, content: &str) -> Value {
    json!({
        "touser": to_user,
        "msgtype": "markdown",
        "agentid": agent_id_value(agent_id),
        "markdown": {"content": content},
    })
}

/// Group robot (`/cgi-bin/webhook/send?key=...`) text.
pub fn robot_text_body(content: &str) -> Value {
    json!({"msgtype": "text", "text": {"content": content}})
}

/// Group robot Markdown.
pub fn robot_markdown_body(content: &str) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": content}})
}

/// `{"errcode","errmsg"}` with a non-zero errcode; `None` for a success or a
/// body that names no error (check the HTTP status).
pub fn api_error(body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = v.get("errcode")?.as_i64().unwrap_or(-1);
    let msg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
    (code != 0).then(|| (code, msg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::crypto::testutil::message_of;
    use proptest::prelude::*;

    // Tencent's WXBizMsgCrypt sample.
    const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const AES_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const CORP: &str = "ww1436e0e65a779aee";
    const TS: &str = "1476416373";
    const NONCE: &str = "47744683";
    const ECHOSTR: &str =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    const NOW: i64 = 1_476_416_373_000;
    const WINDOW: i64 = 3_600_000;

    fn crypto() -> Crypto {
        Crypto::new(TOKEN, AES_KEY, CORP).unwrap()
    }

    fn query(sig: &str, ts: &str, nonce: &str, echostr: Option<&str>) -> String {
        let mut q = vec![("msg_signature", sig), ("timestamp", ts), ("nonce", nonce)];
        if let Some(e) = echostr {
            q.push(("echostr", e));
        }
        serde_urlencoded::to_string(q).unwrap()
    }

    fn inner_text(content: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>\
             <FromUserName><![CDATA[zhangsan]]></FromUserName>\
             <CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[{content}]]></Content><MsgId>1234567890123456</MsgId>\
             <AgentID>1000002</AgentID></xml>"
        )
    }

    /// A signed POST: (query, body).
    fn delivery(c: &Crypto, inner: &str) -> (String, Vec<u8>) {
        let enc = c.encrypt(inner, *b"abcdefghijklmnop");
        let body = format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>\
             <AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
        );
        let sig = signature(TOKEN, TS, NONCE, &enc);
        (query(&sig, TS, NONCE, None), body.into_bytes())
    }

    #[test]
    fn url_verification_vector() {
        assert_eq!(
            signature(TOKEN, TS, NONCE, ECHOSTR),
            "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
        );
        assert_eq!(crypto().decrypt(ECHOSTR).unwrap(), "1288432023552776189");
        let q = query(
            "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
            TS,
            NONCE,
            Some(ECHOSTR),
        );
        assert_eq!(
            verify_url(&q, &crypto(), WINDOW, NOW),
            Ok(Verdict::Handshake {
                content_type: "text/plain",
                body: "1288432023552776189".into()
            })
        );
        // An unencoded `+` in the URL still works.
        let raw = format!(
            "msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp={TS}&nonce={NONCE}&echostr={ECHOSTR}"
        );
        assert!(verify_url(&raw, &crypto(), WINDOW, NOW).is_ok());
    }

    #[test]
    fn url_verification_rejections() {
        let c = crypto();
        let sig = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb";
        let bad = query(
            "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebec",
            TS,
            NONCE,
            Some(ECHOSTR),
        );
        assert_eq!(
            verify_url(&bad, &c, WINDOW, NOW),
            Err(Rejection::BadSignature)
        );
        let other_nonce = query(sig, TS, "1", Some(ECHOSTR));
        assert_eq!(
            verify_url(&other_nonce, &c, WINDOW, NOW),
            Err(Rejection::BadSignature)
        );
        let no_sig = format!("timestamp={TS}&nonce={NONCE}&echostr=abc");
        assert_eq!(
            verify_url(&no_sig, &c, WINDOW, NOW),
            Err(Rejection::BadSignature)
        );
        let no_ts = format!("msg_signature={sig}&nonce={NONCE}&echostr=abc");
        assert_eq!(verify_url(&no_ts, &c, WINDOW, NOW), Err(Rejection::Stale));
        let no_echo = query(sig, TS, NONCE, None);
        assert!(matches!(
            verify_url(&no_echo, &c, WINDOW, NOW),
            Err(Rejection::Malformed(_))
        ));
        // Seconds, not milliseconds: an hour and a second later is stale.
        let q = query(sig, TS, NONCE, Some(ECHOSTR));
        assert_eq!(
            verify_url(&q, &c, WINDOW, NOW + 3_601_000),
            Err(Rejection::Stale)
        );
        assert!(verify_url(&q, &c, WINDOW, NOW - 3_600_000).is_ok());
        // The receiver must be our CorpID.
        let other = Crypto::new(TOKEN, AES_KEY, "ww0000000000000000").unwrap();
        assert_eq!(
            verify_url(&q, &other, WINDOW, NOW),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn config_needs_token_key_and_corp() {
        use clawdbot_config::Secret;
        assert!(Crypto::from_config(&WeComConfig::default()).is_none());
        let mut cfg = WeComConfig {
            token: Some(Secret::new(TOKEN)),
            encoding_aes_key: Some(Secret::new(AES_KEY)),
            corp_id: Some(CORP.into()),
            ..Default::default()
        };
        assert_eq!(Crypto::from_config(&cfg), Some(Ok(crypto())));
        cfg.encoding_aes_key = Some(Secret::new("short"));
        assert!(matches!(Crypto::from_config(&cfg), Some(Err(_))));
    }

    #[test]
    fn key_checks() {
        assert!(Crypto::new(TOKEN, &AES_KEY[..42], CORP).is_err());
        assert!(Crypto::new(TOKEN, &format!("{}!", &AES_KEY[..42]), CORP).is_err());
        assert!(Crypto::new("", AES_KEY, CORP).is_err());
        assert!(!format!("{:?}", crypto()).contains(TOKEN));
    }

    #[test]
    fn accepts_a_text_message() {
        let c = crypto();
        let (q, body) = delivery(&c, &inner_text("  hello  "));
        assert_eq!(
            verify_message(&q, &body, &c, WINDOW, NOW),
            Ok(Verdict::Message(Box::new(Inbound {
                platform: Platform::Wecom,
                delivery_id: "1234567890123456".into(),
                message_id: None,
                conversation_id: "zhangsan".into(),
                user_id: "zhangsan".into(),
                text: "hello".into(),
                reply: ReplyTo::Wecom {
                    to_user: "zhangsan".into()
                },
            })))
        );
    }

    #[test]
    fn escaped_text_is_unescaped() {
        let c = crypto();
        let inner = inner_text("x").replace(
            "<Content><![CDATA[x]]></Content>",
            "<Content>a &lt;b&gt; &amp; &#x4e2d;&#25991;</Content>",
        );
        let (q, body) = delivery(&c, &inner);
        let m = message_of(verify_message(&q, &body, &c, WINDOW, NOW));
        assert_eq!(m.text, "a <b> & 中文");
    }

    #[test]
    fn message_rejections() {
        let c = crypto();
        let (q, body) = delivery(&c, &inner_text("hi"));
        // Signature over another Encrypt value.
        let (_, other_body) = delivery(&c, &inner_text("other"));
        assert_eq!(
            verify_message(&q, &other_body, &c, WINDOW, NOW),
            Err(Rejection::BadSignature)
        );
        // Stale.
        assert_eq!(
            verify_message(&q, &body, &c, WINDOW, NOW + 3_601_000),
            Err(Rejection::Stale)
        );
        // Missing signature.
        let bare = format!("timestamp={TS}&nonce={NONCE}");
        assert_eq!(
            verify_message(&bare, &body, &c, WINDOW, NOW),
            Err(Rejection::BadSignature)
        );
        // Wrong receiver: signed with our token but encrypted for another corp.
        let other = Crypto::new(TOKEN, AES_KEY, "ww0000000000000000").unwrap();
        let (q2, body2) = delivery(&other, &inner_text("hi"));
        assert_eq!(
            verify_message(&q2, &body2, &c, WINDOW, NOW),
            Err(Rejection::BadToken)
        );
        // No Encrypt element.
        assert!(matches!(
            verify_message(&q, b"<xml><A>1</A></xml>", &c, WINDOW, NOW),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn tampered_or_badly_padded_ciphertexts() {
        let c = crypto();
        // `plain` encrypted as is, without WeCom's framing.
        let encrypt_raw =
            |plain: &[u8]| aes256_cbc_encrypt(&c.aes_key, &c.iv(), plain, PadBlock::B32);
        // Bad padding: the first block of a zero plaintext decrypts to
        // zeros alone, and a pad byte of 0 is invalid.
        let mut raw = encrypt_raw(&[0u8; 31]);
        raw.truncate(16);
        assert_eq!(
            c.decrypt(&b64_encode(&raw)),
            Err(Rejection::Undecryptable("bad PKCS#7 padding"))
        );
        // Tampering with the last block garbles the padding or the receiver.
        let mut raw = b64_decode(&c.encrypt("hello", [3; 16])).unwrap();
        let last = raw.len() - 1;
        raw[last - 16] ^= 0x40;
        assert!(c.decrypt(&b64_encode(&raw)).is_err());
        // A length field pointing past the end.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&u32::MAX.to_be_bytes());
        plain.extend_from_slice(b"x");
        let overflow = b64_encode(&encrypt_raw(&plain));
        assert_eq!(
            c.decrypt(&overflow),
            Err(Rejection::Undecryptable("length overflow"))
        );
        // Shorter than the header.
        let short = b64_encode(&encrypt_raw(b"abc"));
        assert_eq!(
            c.decrypt(&short),
            Err(Rejection::Undecryptable("too short"))
        );
        assert!(matches!(c.decrypt("%%%"), Err(Rejection::Undecryptable(_))));
    }

    #[test]
    fn events_and_other_types_are_ignored() {
        let c = crypto();
        let event = format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>\
             <CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>\
             <AgentID>1</AgentID></xml>"
        );
        let image = inner_text("x").replace("[text]", "[image]");
        let no_id = inner_text("hi").replace("<MsgId>1234567890123456</MsgId>", "");
        for (inner, want) in [
            (event, Ok(Verdict::Ignored("event"))),
            (image, Ok(Verdict::Ignored("message type without text"))),
            (inner_text("   "), Ok(Verdict::Ignored("empty message"))),
            (no_id, Err(Rejection::malformed("missing MsgId"))),
        ] {
            let (q, body) = delivery(&c, &inner);
            assert_eq!(verify_message(&q, &body, &c, WINDOW, NOW), want, "{inner}");
        }
    }

    #[test]
    fn xml_refuses_doctype_and_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><xml><Encrypt>&lol;</Encrypt></xml>"#;
        assert_eq!(
            xml_fields(bomb),
            Err(Rejection::malformed("XML DOCTYPE refused"))
        );
        assert_eq!(
            xml_fields(b"<xml><Encrypt>&lol;</Encrypt></xml>"),
            Err(Rejection::malformed("XML entity refused"))
        );
        assert!(xml_fields(b"<xml><A>1</A>").is_err());
        assert!(xml_fields(b"<xml></xml><xml></xml>").is_err());
        assert!(xml_fields(b"").is_err());
        assert!(xml_fields(b"<xml><A>1</B></xml>").is_err());
        assert!(xml_fields(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn xml_reads_children_only() {
        let f = xml_fields(
            b"<?xml version=\"1.0\"?><!-- c --><xml><A>1</A><B><C>deep</C>x</B><D/><A>2</A></xml>",
        )
        .unwrap();
        assert_eq!(f.get("A").map(String::as_str), Some("1"));
        assert_eq!(f.get("B").map(String::as_str), Some("x"));
        assert_eq!(f.get("D").map(String::as_str), Some(""));
        assert!(!f.contains_key("C"));
    }

    #[test]
    fn builds_bodies() {
        assert_eq!(
            send_text_body("1000002", "zhangsan", "hi"),
            json!({"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}})
        );
        assert_eq!(
            send_markdown_body("1000002", "zhangsan", "**hi**"),
            json!({"touser": "zhangsan", "msgtype": "markdown", "agentid": 1000002, "markdown": {"content": "**hi**"}})
        );
        assert_eq!(send_text_body("x1", "u", "c")["agentid"], json!("x1"));
        assert_eq!(
            robot_text_body("hi"),
            json!({"msgtype": "text", "text": {"content": "hi"}})
        );
        assert_eq!(
            robot_markdown_body("hi"),
            json!({"msgtype": "markdown", "markdown": {"content": "hi"}})
        );
    }

    #[test]
    fn reads_api_errors() {
        assert_eq!(api_error(br#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert_eq!(
            api_error(br#"{"errcode":40014,"errmsg":"invalid access_token"}"#),
            Some((40014, "invalid access_token".into()))
        );
        assert_eq!(api_error(b"<html/>"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_requests_never_panic(q in ".{0,120}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let c = crypto();
            prop_assert!(verify_url(&q, &c, WINDOW, NOW).is_err());
            prop_assert!(verify_message(&q, &body, &c, WINDOW, NOW).is_err());
            let _ = xml_fields(&body);
            let _ = api_error(&body);
        }

        #[test]
        fn random_xml_never_panics(s in "(<[a-zA-Z/!?]{0,3}|>|&[a-z#0-9]{0,4};?|\\]\\]>|<!\\[CDATA\\[|[a-z ]{0,4}){0,24}") {
            let _ = xml_fields(s.as_bytes());
        }

        #[test]
        fn random_ciphertexts_never_panic(s in "[A-Za-z0-9+/=]{0,120}") {
            let _ = crypto().decrypt(&s);
        }

        #[test]
        fn round_trips(msg in ".{0,300}", random in any::<[u8; 16]>()) {
            let c = crypto();
            prop_assert_eq!(c.decrypt(&c.encrypt(&msg, random)), Ok(msg));
        }

        #[test]
        fn flipped_encrypt_values_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = crypto();
            let (q, body) = delivery(&c, &inner_text("hi"));
            let text = String::from_utf8(body).unwrap();
            let start = text.find("<Encrypt><![CDATA[").unwrap() + "<Encrypt><![CDATA[".len();
            let end = text.find("]]></Encrypt>").unwrap();
            let mut bytes = text.into_bytes();
            let i = start + pos.index(end - start);
            bytes[i] ^= 1 << bit;
            prop_assert!(verify_message(&q, &bytes, &c, WINDOW, NOW).is_err());
        }

        #[test]
        fn flipped_signatures_are_refused(pos in 0usize..40, bit in 0u8..7) {
            let c = crypto();
            let enc = c.encrypt(&inner_text("hi"), [1; 16]);
            let mut sig = signature(TOKEN, TS, NONCE, &enc).into_bytes();
            sig[pos] ^= 1 << bit;
            let sig = String::from_utf8_lossy(&sig).into_owned();
            let body = format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
            let r = verify_message(&query(&sig, TS, NONCE, None), body.as_bytes(), &c, WINDOW, NOW);
            if !sig.eq_ignore_ascii_case(&signature(TOKEN, TS, NONCE, &enc)) {
                prop_assert_eq!(r, Err(Rejection::BadSignature));
            }
        }
    }
}
