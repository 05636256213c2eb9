//! Slack: v0 request signatures, Events API parsing, chat.postMessage bodies.

use clawdbot_config::{Secret, SlackConfig};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::im::crypto::{
    check_signed, configured_secret, header_str, hmac_sha256, secs_to_ms, window_ms,
};
use crate::im::{Inbound, Platform, Rejection, ReplyTo, Verdict};

const SIGNATURE: &str = "X-Slack-Signature";
const TIMESTAMP: &str = "X-Slack-Request-Timestamp";

/// Message subtypes that are still a person writing to us; every other
/// subtype (edits, deletions, joins, bot_message...) is ignored.
const USER_SUBTYPES: [&str; 2] = ["file_share", "thread_broadcast"];

/// `"v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body))`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut base = Vec::with_capacity(4 + timestamp.len() + body.len());
    base.extend_from_slice(b"v0:");
    base.extend_from_slice(timestamp.as_bytes());
    base.push(b':');
    base.extend_from_slice(body);
    format!("v0={}", hex::encode(hmac_sha256(secret.as_bytes(), &base)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub signing_secret: Secret,
    pub window_ms: i64,
}

impl Verifier {
    /// `None` when no signing secret is configured.
    pub fn from_config(cfg: &SlackConfig) -> Option<Self> {
        Some(Self {
            signing_secret: configured_secret(&cfg.signing_secret)?,
            window_ms: window_ms(cfg.timestamp_window_secs),
        })
    }
}

/// Verifies an Events API request on its raw bytes, then parses it.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    v: &Verifier,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let given = header_str(headers, SIGNATURE).ok_or(Rejection::BadSignature)?;
    let ts = header_str(headers, TIMESTAMP).ok_or(Rejection::Stale)?;
    let expected = signature(v.signing_secret.expose(), ts, body);
    check_signed(&expected, given, secs_to_ms(ts), now_ms, v.window_ms)?;
    parse_event(body)
}

/// Parses an Events API payload (already verified).
pub fn parse_event(body: &[u8]) -> Result<Verdict, Rejection> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::malformed(format!("not JSON: {e}")))?;
    match str_at(&v, "/type") {
        Some("url_verification") => {
            let challenge = str_at(&v, "/challenge").ok_or_else(|| missing("challenge"))?;
            Ok(Verdict::Handshake {
                content_type: "application/json",
                body: json!({ "challenge": challenge }).to_string(),
            })
        }
        Some("event_callback") => parse_callback(&v),
        Some(_) => Ok(Verdict::Ignored("request type not handled")),
        None => Err(missing("type")),
    }
}

fn parse_callback(v: &Value) -> Result<Verdict, Rejection> {
    let event_id = str_at(v, "/event_id").ok_or_else(|| missing("event_id"))?;
    let event = v.get("event").ok_or_else(|| missing("event"))?;
    match (str_at(event, "/type"), str_at(event, "/channel_type")) {
        (Some("app_mention"), _) | (Some("message"), Some("im")) => {}
        // Channel messages that mention us arrive again as app_mention.
        (Some("message"), _) => return Ok(Verdict::Ignored("channel message")),
        _ => return Ok(Verdict::Ignored("event type not handled")),
    }
    if event.get("bot_id").is_some_and(|b| !b.is_null()) {
        return Ok(Verdict::Ignored("message from a bot"));
    }
    if let Some(sub) = str_at(event, "/subtype")
        && !USER_SUBTYPES.contains(&sub)
    {
        return Ok(Verdict::Ignored("message subtype not handled"));
    }
    let channel = str_at(event, "/channel").ok_or_else(|| missing("event.channel"))?;
    let user = str_at(event, "/user").ok_or_else(|| missing("event.user"))?;
    let text = strip_mentions(str_at(event, "/text").unwrap_or_default());
    if text.is_empty() {
        return Ok(Verdict::Ignored("empty message"));
    }
    Ok(Verdict::Message(Box::new(Inbound {
        platform: Platform::Slack,
        delivery_id: event_id.to_owned(),
        message_id: None,
        conversation_id: channel.to_owned(),
        user_id: user.to_owned(),
        text,
        reply: ReplyTo::Slack {
            channel: channel.to_owned(),
            thread_ts: str_at(event, "/thread_ts").map(str::to_owned),
        },
    })))
}

/// Removes user mentions (`<@U123>`, `<@U123|name>`) and one space after
/// each, then trims.
fn strip_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        out.push_str(&rest[..start]);
        let after = &rest[start + len + 1..];
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    out.push_str(rest);
    out.trim().to_owned()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)?.as_str().filter(|s| !s.is_empty())
}

fn missing(field: &str) -> Rejection {
    Rejection::malformed(format!("missing {field}"))
}

/// `chat.postMessage`; `thread_ts` answers inside a thread.
pub fn post_message_body(channel: &str, text: &str, thread_ts: Option<&str>) -> Value {
    let mut body = json!({"channel": channel, "text": text});
    if let Some(ts) = thread_ts {
        body["thread_ts"] = json!(ts);
    }
    body
}

/// Web API answers are `{"ok": true, ...}` or `{"ok": false, "error": ".."}`
/// (with HTTP 200). An answer that is not JSON with `ok` is an error too.
pub fn api_error(body: &[u8]) -> Option<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Some("invalid_response".into());
    };
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => None,
        Some(false) => Some(str_at(&v, "/error").unwrap_or("unknown_error").to_owned()),
        None => Some("invalid_response".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::crypto::testutil::{flip_bit, message_of, random_request, set_or_remove};
    use proptest::prelude::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const NOW: i64 = 1_700_000_000_000;

    fn verifier() -> Verifier {
        Verifier {
            signing_secret: SECRET.into(),
            window_ms: 300_000,
        }
    }

    fn signed(body: &[u8], ts_secs: i64) -> HeaderMap {
        let ts = ts_secs.to_string();
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP, ts.parse().unwrap());
        h.insert(SIGNATURE, signature(SECRET, &ts, body).parse().unwrap());
        h
    }

    fn callback(event: Value) -> Vec<u8> {
        json!({
            "token": "XXYYZZ",
            "team_id": "T123ABC456",
            "api_app_id": "A123ABC456",
            "event": event,
            "type": "event_callback",
            "event_id": "Ev123ABC456",
            "event_time": 1_700_000_000,
            "authorizations": [{"user_id": "U0BOT", "is_bot": true}]
        })
        .to_string()
        .into_bytes()
    }

    fn mention(text: &str) -> Value {
        json!({
            "type": "app_mention",
            "user": "U061F7AUR",
            "text": text,
            "ts": "1515449522.000016",
            "channel": "C123ABC456",
            "event_ts": "1515449522000016"
        })
    }

    fn dm(text: &str) -> Value {
        json!({
            "type": "message",
            "channel": "D024BE91L",
            "user": "U2147483697",
            "text": text,
            "ts": "1355517523.000005",
            "channel_type": "im"
        })
    }

    #[test]
    fn config_needs_a_signing_secret() {
        use clawdbot_config::Secret;
        assert_eq!(Verifier::from_config(&SlackConfig::default()), None);
        let cfg = SlackConfig {
            signing_secret: Some(Secret::new("s")),
            ..Default::default()
        };
        assert_eq!(
            Verifier::from_config(&cfg).map(|v| v.window_ms),
            Some(300_000)
        );
    }

    #[test]
    fn signature_matches_the_docs_vector() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(SECRET, "1531420618", body.as_bytes()),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn accepts_a_mention_and_strips_it() {
        let mut e = mention("<@U0BOT> what is <@U2|bob> doing?");
        e["thread_ts"] = json!("1515449000.000001");
        let body = callback(e);
        let m = message_of(verify(&signed(&body, NOW / 1000), &body, &verifier(), NOW));
        assert_eq!(
            m,
            Inbound {
                platform: Platform::Slack,
                delivery_id: "Ev123ABC456".into(),
                message_id: None,
                conversation_id: "C123ABC456".into(),
                user_id: "U061F7AUR".into(),
                text: "what is doing?".into(),
                reply: ReplyTo::Slack {
                    channel: "C123ABC456".into(),
                    thread_ts: Some("1515449000.000001".into()),
                },
            }
        );
    }

    #[test]
    fn accepts_direct_messages_only_among_plain_messages() {
        let m = message_of(parse_event(&callback(dm("  hello  "))));
        assert_eq!(m.text, "hello");
        assert_eq!(
            m.reply,
            ReplyTo::Slack {
                channel: "D024BE91L".into(),
                thread_ts: None
            }
        );
        let mut e = dm("hello");
        e["channel_type"] = json!("channel");
        assert_eq!(
            parse_event(&callback(e)),
            Ok(Verdict::Ignored("channel message"))
        );
    }

    #[test]
    fn ignores_bots_subtypes_and_empty_text() {
        let mut e = dm("hi");
        e["bot_id"] = json!("B123");
        assert_eq!(
            parse_event(&callback(e)),
            Ok(Verdict::Ignored("message from a bot"))
        );
        for sub in [
            "message_changed",
            "channel_join",
            "bot_message",
            "message_deleted",
        ] {
            let mut e = dm("hi");
            e["subtype"] = json!(sub);
            assert_eq!(
                parse_event(&callback(e)),
                Ok(Verdict::Ignored("message subtype not handled")),
                "{sub}"
            );
        }
        let mut e = dm("with a file");
        e["subtype"] = json!("file_share");
        assert!(matches!(parse_event(&callback(e)), Ok(Verdict::Message(_))));
        assert_eq!(
            parse_event(&callback(mention("<@U0BOT>"))),
            Ok(Verdict::Ignored("empty message"))
        );
        assert_eq!(
            parse_event(&callback(json!({"type": "reaction_added", "user": "U1"}))),
            Ok(Verdict::Ignored("event type not handled"))
        );
    }

    #[test]
    fn url_verification_is_a_handshake() {
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(
            verify(&signed(body, NOW / 1000), body, &verifier(), NOW),
            Ok(Verdict::Handshake {
                content_type: "application/json",
                body: r#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
                    .into()
            })
        );
        // Unsigned, it is refused like anything else.
        assert_eq!(
            verify(&HeaderMap::new(), body, &verifier(), NOW),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn rejections() {
        let body = callback(dm("hi"));
        let v = verifier();
        let ts = NOW / 1000;
        let mut h = signed(&body, ts);
        h.insert(
            SIGNATURE,
            signature("other", &ts.to_string(), &body).parse().unwrap(),
        );
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::BadSignature));
        let mut h = signed(&body, ts);
        h.remove(TIMESTAMP);
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::Stale));
        let mut h = signed(&body, ts);
        h.remove(SIGNATURE);
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::BadSignature));
        // Timestamp swapped after signing.
        let mut h = signed(&body, ts);
        h.insert(TIMESTAMP, (ts + 1).to_string().parse().unwrap());
        assert_eq!(verify(&h, &body, &v, NOW), Err(Rejection::BadSignature));
        // Five minutes and a second old (seconds in the header).
        let old = ts - 301;
        assert_eq!(
            verify(&signed(&body, old), &body, &v, NOW),
            Err(Rejection::Stale)
        );
        assert!(verify(&signed(&body, ts - 300), &body, &v, NOW).is_ok());
        // Missing fields are named.
        let mut e = dm("hi");
        e.as_object_mut().unwrap().remove("user");
        assert_eq!(
            parse_event(&callback(e)),
            Err(Rejection::malformed("missing event.user"))
        );
        assert!(matches!(
            parse_event(b"token=a&b=c"),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn strips_odd_mentions_safely() {
        assert_eq!(strip_mentions("<@U1>hi"), "hi");
        assert_eq!(strip_mentions("hi <@U1"), "hi <@U1");
        assert_eq!(strip_mentions("<@U1> <@U2> a <@U3|x> b"), "a b");
        assert_eq!(strip_mentions("<!here> ok"), "<!here> ok");
    }

    #[test]
    fn builds_bodies_and_reads_errors() {
        assert_eq!(
            post_message_body("C1", "hi", Some("1.2")),
            json!({"channel": "C1", "text": "hi", "thread_ts": "1.2"})
        );
        assert_eq!(
            post_message_body("C1", "hi", None),
            json!({"channel": "C1", "text": "hi"})
        );
        assert_eq!(api_error(br#"{"ok":true,"ts":"1"}"#), None);
        assert_eq!(
            api_error(br#"{"ok":false,"error":"channel_not_found"}"#),
            Some("channel_not_found".into())
        );
        assert_eq!(api_error(br#"{"ok":false}"#), Some("unknown_error".into()));
        assert_eq!(api_error(b"<html>"), Some("invalid_response".into()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_requests_never_panic(
            (h, bytes) in random_request(&[SIGNATURE, TIMESTAMP], 80),
        ) {
            prop_assert!(verify(&h, &bytes, &verifier(), NOW).is_err());
            let _ = parse_event(&bytes);
            let _ = api_error(&bytes);
        }

        #[test]
        fn random_texts_never_panic(text in ".{0,80}") {
            let _ = parse_event(&callback(mention(&text)));
            let s = strip_mentions(&text);
            prop_assert_eq!(s.trim(), s.as_str());
        }

        #[test]
        fn flipped_bodies_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let body = callback(dm("hi"));
            let h = signed(&body, NOW / 1000);
            let tampered = flip_bit(body, pos, bit);
            prop_assert_eq!(verify(&h, &tampered, &verifier(), NOW), Err(Rejection::BadSignature));
        }

        #[test]
        fn flipped_signatures_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let body = callback(dm("hi"));
            let mut h = signed(&body, NOW / 1000);
            let sig = signature(SECRET, &(NOW / 1000).to_string(), &body).into_bytes();
            set_or_remove(&mut h, SIGNATURE, &flip_bit(sig, pos, bit));
            prop_assert_eq!(verify(&h, &body, &verifier(), NOW), Err(Rejection::BadSignature));
        }
    }
}
