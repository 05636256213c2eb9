//! DingTalk: enterprise-robot callback verification and parsing (also used
//! for Stream-mode frames), reply and OpenAPI bodies, custom-robot signing.

use clawdbot_config::{DingTalkConfig, Secret};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::im::crypto::{
    b64_encode, check_signed, configured_secret, header_str, hmac_sha256, sha256, window_ms,
};
use crate::im::{Inbound, Platform, Rejection, ReplyTo, Verdict};

/// OpenAPI message template keys.
pub const MSG_KEY_TEXT: &str = "sampleText";
pub const MSG_KEY_MARKDOWN: &str = "sampleMarkdown";
pub const MSG_KEY_ACTION_CARD: &str = "sampleActionCard";

/// `base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret))`, the
/// callback `sign` header and the custom robot's `sign` parameter alike.
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let msg = format!("{timestamp_ms}\n{secret}");
    b64_encode(&hmac_sha256(secret.as_bytes(), msg.as_bytes()))
}

/// What callback verification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub app_secret: Secret,
    pub window_ms: i64,
}

impl Verifier {
    /// `None` when no AppSecret is configured: callbacks cannot be verified.
    pub fn from_config(cfg: &DingTalkConfig) -> Option<Self> {
        Some(Self {
            app_secret: configured_secret(&cfg.app_secret)?,
            window_ms: window_ms(cfg.timestamp_window_secs),
        })
    }
}

/// What a callback's signature is bound by: its `timestamp` and `sign`
/// headers as one key. The signature does not cover the body (DingTalk's
/// design), so the route binds this key to the first msgId it carried and
/// refuses it with any other (see `replay`).
pub fn signature_key(headers: &HeaderMap) -> Option<String> {
    let ts = header_str(headers, "timestamp")?;
    let sign = header_str(headers, "sign")?;
    Some(format!(
        "dingtalk:{}",
        hex::encode(sha256(format!("{ts}\n{sign}").as_bytes()))
    ))
}

/// Verifies an HTTP callback: headers `timestamp` (ms) and `sign`.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    v: &Verifier,
    now_ms: i64,
) -> Result<Verdict, Rejection> {
    let ts_raw = header_str(headers, "timestamp").ok_or(Rejection::Stale)?;
    let given = header_str(headers, "sign").ok_or(Rejection::BadSignature)?;
    let ts: i64 = ts_raw.parse().map_err(|_| Rejection::Stale)?;
    check_signed(
        &sign(v.app_secret.expose(), ts),
        given,
        Some(ts),
        now_ms,
        v.window_ms,
    )?;
    parse_message(body)
}

/// Parses a robot message (the callback body, or a Stream frame's `data`).
pub fn parse_message(body: &[u8]) -> Result<Verdict, Rejection> {
    let msg: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::malformed(format!("not JSON: {e}")))?;
    if !msg.is_object() {
        return Err(Rejection::malformed("not a JSON object"));
    }
    let delivery_id = required(&msg, "msgId")?;
    let conversation_id = required(&msg, "conversationId")?;
    let staff_id = str_field(&msg, "senderStaffId");
    let user_id = staff_id
        .or_else(|| str_field(&msg, "senderId"))
        .ok_or_else(|| Rejection::malformed("missing senderId"))?;
    let group = scalar_text(msg.get("conversationType")).as_deref() == Some("2");

    let Some(raw) = message_text(&msg) else {
        return Ok(Verdict::Ignored("message type without text"));
    };
    let text = clean_text(&raw, group);
    if text.is_empty() {
        return Ok(Verdict::Ignored("empty message"));
    }

    Ok(Verdict::Message(Box::new(Inbound {
        platform: Platform::Dingtalk,
        delivery_id: delivery_id.to_owned(),
        message_id: None,
        conversation_id: conversation_id.to_owned(),
        user_id: user_id.to_owned(),
        text,
        reply: ReplyTo::Dingtalk {
            session_webhook: str_field(&msg, "sessionWebhook").map(str::to_owned),
            session_webhook_expires_ms: int_field(&msg, "sessionWebhookExpiredTime"),
            group,
            conversation_id: conversation_id.to_owned(),
            sender_staff_id: staff_id.map(str::to_owned),
            robot_code: str_field(&msg, "robotCode").map(str::to_owned),
        },
    })))
}

/// The user's words by `msgtype`; `None` for types that carry none.
fn message_text(msg: &Value) -> Option<String> {
    match msg.get("msgtype")?.as_str()? {
        "text" => msg.pointer("/text/content")?.as_str().map(str::to_owned),
        "richText" => {
            let parts = msg.pointer("/content/richText")?.as_array()?;
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text")?.as_str())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            Some(texts.join("\n"))
        }
        // Voice messages come with DingTalk's own transcription.
        "audio" => msg
            .pointer("/content/recognition")?
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// Trims, and in groups drops one leading `@name` token: DingTalk usually
/// removes the robot's @ itself, but not always (e.g. a copied mention).
fn clean_text(raw: &str, group: bool) -> String {
    let text = raw.trim();
    if group && let Some(rest) = text.strip_prefix('@') {
        return match rest.split_once(char::is_whitespace) {
            Some((_, after)) => after.trim().to_owned(),
            None => String::new(),
        };
    }
    text.to_owned()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str().filter(|s| !s.is_empty())
}

fn required<'a>(v: &'a Value, key: &str) -> Result<&'a str, Rejection> {
    str_field(v, key).ok_or_else(|| Rejection::malformed(format!("missing {key}")))
}

/// A number or a numeric string.
fn int_field(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string or a number, as text (`conversationType` is documented as a
/// string, but be lenient).
fn scalar_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

// ---- Replies through `sessionWebhook` (same shapes as the custom robot) ----

/// A text reply; `at_staff_id` @-mentions the sender in a group.
/// A text reply; in a group, `at_staff_id` @-mentions the sender. DingTalk
/// notifies only when the id is both in `at.atUserIds` and in the text.
pub fn text_reply(content: &str, at_staff_id: Option<&str>) -> Value {
    let mut body =
        json!({"msgtype": "text", "text": {"content": with_mention(content, at_staff_id)}});
    if let Some(id) = at_staff_id {
        body["at"] = json!({"atUserIds": [id]});
    }
    body
}

/// A Markdown reply, @-mentioning like [`text_reply`].
pub fn markdown_reply(title: &str, text: &str, at_staff_id: Option<&str>) -> Value {
    let mut body = json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": with_mention(text, at_staff_id)}
    });
    if let Some(id) = at_staff_id {
        body["at"] = json!({"atUserIds": [id]});
    }
    body
}

fn with_mention(text: &str, at_staff_id: Option<&str>) -> String {
    match at_staff_id {
        Some(id) => format!("@{id} {text}"),
        None => text.to_owned(),
    }
}

/// An ActionCard with one button ("整体跳转").
pub fn action_card_reply(title: &str, text: &str, single_title: &str, single_url: &str) -> Value {
    json!({
        "msgtype": "actionCard",
        "actionCard": {
            "title": title,
            "text": text,
            "singleTitle": single_title,
            "singleURL": single_url,
        }
    })
}

// ---- Robot OpenAPI ----

/// `POST /v1.0/robot/oToMessages/batchSend`.
pub fn batch_send_body(
    robot_code: &str,
    user_ids: &[&str],
    msg_key: &str,
    msg_param_json: &str,
) -> Value {
    json!({
        "robotCode": robot_code,
        "userIds": user_ids,
        "msgKey": msg_key,
        "msgParam": msg_param_json,
    })
}

/// `POST /v1.0/robot/groupMessages/send`.
pub fn group_send_body(
    robot_code: &str,
    open_conversation_id: &str,
    msg_key: &str,
    msg_param_json: &str,
) -> Value {
    json!({
        "robotCode": robot_code,
        "openConversationId": open_conversation_id,
        "msgKey": msg_key,
        "msgParam": msg_param_json,
    })
}

/// `msgParam` for [`MSG_KEY_MARKDOWN`]: the API wants it as a JSON string.
pub fn markdown_msg_param(title: &str, text: &str) -> String {
    json!({"title": title, "text": text}).to_string()
}

/// `msgParam` for [`MSG_KEY_TEXT`].
pub fn text_msg_param(content: &str) -> String {
    json!({"content": content}).to_string()
}

/// `msgParam` for [`MSG_KEY_ACTION_CARD`].
pub fn action_card_msg_param(
    title: &str,
    text: &str,
    single_title: &str,
    single_url: &str,
) -> String {
    json!({
        "title": title,
        "text": text,
        "singleTitle": single_title,
        "singleURL": single_url,
    })
    .to_string()
}

// ---- Custom robot (outbound notifications) ----

/// The webhook URL with `timestamp` and `sign` appended when the robot has a
/// signing secret ("加签"); the sign is URL-encoded once.
pub fn signed_robot_url(webhook_url: &str, secret: Option<&str>, now_ms: i64) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return webhook_url.to_owned();
    };
    let sign = sign(secret, now_ms);
    let ts = now_ms.to_string();
    let query = serde_urlencoded::to_string([("timestamp", ts.as_str()), ("sign", sign.as_str())])
        .unwrap_or_default();
    let sep = if webhook_url.contains('?') { '&' } else { '?' };
    format!("{webhook_url}{sep}{query}")
}

pub fn robot_text_body(text: &str) -> Value {
    text_reply(text, None)
}

pub fn robot_markdown_body(title: &str, text: &str) -> Value {
    markdown_reply(title, text, None)
}

// ---- Answers ----

/// The error in a DingTalk answer, if any: `{"errcode","errmsg"}` (robot
/// webhooks, old API; errcode 0 is success) or `{"code","message"}` (new
/// OpenAPI, with HTTP 4xx/5xx; `code` is usually a string, reported as -1).
/// `None` for a success or a body that names no error (check the HTTP status).
pub fn api_error(body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(code) = v.get("errcode") {
        let code = code
            .as_i64()
            .or_else(|| code.as_str()?.parse().ok())
            .unwrap_or(-1);
        let msg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
        return (code != 0).then(|| (code, msg.to_owned()));
    }
    let code = v.get("code")?;
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
    match code {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(-1);
            (n != 0).then(|| (n, message.to_owned()))
        }
        Value::String(s) if s.is_empty() || s == "0" => None,
        Value::String(s) => Some((-1, format!("{s}: {message}"))),
        _ => Some((-1, message.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::crypto::testutil::{flip_bit, message_of, random_request, set_or_remove};
    use proptest::prelude::*;

    const SECRET: &str = "app-secret";
    const NOW: i64 = 1_700_000_000_000;

    fn verifier() -> Verifier {
        Verifier {
            app_secret: SECRET.into(),
            window_ms: 3_600_000,
        }
    }

    fn headers(ts: i64, sign: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("timestamp", ts.to_string().parse().unwrap());
        h.insert("sign", sign.parse().unwrap());
        h
    }

    fn group_text(content: &str) -> Value {
        json!({
            "conversationId": "cidXYZ==",
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$bot"}],
            "chatbotCorpId": "dingcorp",
            "chatbotUserId": "$:LWCP_v1:$bot",
            "msgId": "msgABC==",
            "senderNick": "Zhang San",
            "isAdmin": false,
            "senderStaffId": "staff01",
            "sessionWebhookExpiredTime": 1_700_005_400_000_i64,
            "createAt": 1_699_999_999_000_i64,
            "senderCorpId": "dingcorp",
            "conversationType": "2",
            "senderId": "$:LWCP_v1:$sender",
            "conversationTitle": "Team",
            "isInAtList": true,
            "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
            "text": {"content": content},
            "robotCode": "dingrobot",
            "msgtype": "text"
        })
    }

    fn body(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn config_needs_an_app_secret() {
        use clawdbot_config::Secret;
        assert_eq!(Verifier::from_config(&DingTalkConfig::default()), None);
        let cfg = DingTalkConfig {
            app_secret: Some(Secret::new("s")),
            ..Default::default()
        };
        assert_eq!(
            Verifier::from_config(&cfg),
            Some(Verifier {
                app_secret: "s".into(),
                window_ms: 3_600_000
            })
        );
    }

    #[test]
    fn sign_matches_the_vector() {
        assert_eq!(
            sign("this is secret", 1577262236757),
            "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
        );
    }

    #[test]
    fn accepts_a_signed_group_message() {
        let h = headers(NOW - 1000, &sign(SECRET, NOW - 1000));
        let m = message_of(verify(
            &h,
            &body(&group_text(" hello bot ")),
            &verifier(),
            NOW,
        ));
        assert_eq!(
            m,
            Inbound {
                platform: Platform::Dingtalk,
                delivery_id: "msgABC==".into(),
                message_id: None,
                conversation_id: "cidXYZ==".into(),
                user_id: "staff01".into(),
                text: "hello bot".into(),
                reply: ReplyTo::Dingtalk {
                    session_webhook: Some(
                        "https://oapi.dingtalk.com/robot/sendBySession?session=abc".into()
                    ),
                    session_webhook_expires_ms: Some(1_700_005_400_000),
                    group: true,
                    conversation_id: "cidXYZ==".into(),
                    sender_staff_id: Some("staff01".into()),
                    robot_code: Some("dingrobot".into()),
                },
            }
        );
    }

    #[test]
    fn rejects_bad_or_missing_signature_and_stale_timestamps() {
        let b = body(&group_text("hi"));
        let v = verifier();
        let good = sign(SECRET, NOW);
        assert_eq!(
            verify(&headers(NOW, &sign("other", NOW)), &b, &v, NOW),
            Err(Rejection::BadSignature)
        );
        // A sign made for another timestamp.
        assert_eq!(
            verify(&headers(NOW + 1, &good), &b, &v, NOW),
            Err(Rejection::BadSignature)
        );
        let mut no_sign = HeaderMap::new();
        no_sign.insert("timestamp", NOW.to_string().parse().unwrap());
        assert_eq!(verify(&no_sign, &b, &v, NOW), Err(Rejection::BadSignature));
        let mut no_ts = HeaderMap::new();
        no_ts.insert("sign", good.parse().unwrap());
        assert_eq!(verify(&no_ts, &b, &v, NOW), Err(Rejection::Stale));
        assert_eq!(
            verify(&HeaderMap::new(), &b, &v, NOW),
            Err(Rejection::Stale)
        );
        // Authentic but older than the window (ms, not seconds).
        let old = NOW - 3_600_001;
        assert_eq!(
            verify(&headers(old, &sign(SECRET, old)), &b, &v, NOW),
            Err(Rejection::Stale)
        );
        let edge = NOW - 3_600_000;
        assert!(verify(&headers(edge, &sign(SECRET, edge)), &b, &v, NOW).is_ok());
    }

    #[test]
    fn one_to_one_text_keeps_a_leading_at() {
        let mut v = group_text("@everyone read this");
        v["conversationType"] = json!("1");
        v["senderStaffId"] = json!("");
        let m = message_of(parse_message(&body(&v)));
        assert_eq!(m.text, "@everyone read this");
        assert_eq!(m.user_id, "$:LWCP_v1:$sender");
        let ReplyTo::Dingtalk {
            group,
            sender_staff_id,
            ..
        } = m.reply
        else {
            panic!("wrong reply kind")
        };
        assert!(!group);
        assert_eq!(sender_staff_id, None);
    }

    #[test]
    fn group_text_drops_a_leading_mention() {
        let m = message_of(parse_message(&body(&group_text(
            "@Helper  what time is it?",
        ))));
        assert_eq!(m.text, "what time is it?");
        assert_eq!(
            parse_message(&body(&group_text("@Helper"))),
            Ok(Verdict::Ignored("empty message"))
        );
        assert_eq!(
            parse_message(&body(&group_text("   "))),
            Ok(Verdict::Ignored("empty message"))
        );
    }

    #[test]
    fn rich_text_joins_its_text_parts() {
        let mut v = group_text("");
        v["msgtype"] = json!("richText");
        v["content"] = json!({"richText": [
            {"text": "first line"},
            {"pictureDownloadCode": "x", "downloadCode": "y", "type": "picture"},
            {"text": "second line\n"}
        ]});
        assert_eq!(
            message_of(parse_message(&body(&v))).text,
            "first line\nsecond line"
        );
    }

    #[test]
    fn pictures_and_unknown_types_are_ignored() {
        let mut v = group_text("");
        v["msgtype"] = json!("picture");
        v["content"] = json!({"downloadCode": "x"});
        assert_eq!(
            parse_message(&body(&v)),
            Ok(Verdict::Ignored("message type without text"))
        );
        v["msgtype"] = json!("file");
        assert!(matches!(parse_message(&body(&v)), Ok(Verdict::Ignored(_))));
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["msgId", "conversationId"] {
            let mut v = group_text("hi");
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse_message(&body(&v)),
                Err(Rejection::Malformed(format!("missing {field}")))
            );
        }
        let mut v = group_text("hi");
        v.as_object_mut().unwrap().remove("senderStaffId");
        v.as_object_mut().unwrap().remove("senderId");
        assert_eq!(
            parse_message(&body(&v)),
            Err(Rejection::malformed("missing senderId"))
        );
        assert!(matches!(
            parse_message(b"[1]"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(parse_message(b"{"), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn builds_replies() {
        assert_eq!(
            text_reply("hi", Some("staff01")),
            json!({"msgtype": "text", "text": {"content": "@staff01 hi"}, "at": {"atUserIds": ["staff01"]}})
        );
        assert_eq!(
            text_reply("hi", None),
            json!({"msgtype": "text", "text": {"content": "hi"}})
        );
        assert_eq!(
            markdown_reply("T", "**b**", None),
            json!({"msgtype": "markdown", "markdown": {"title": "T", "text": "**b**"}})
        );
        assert_eq!(
            action_card_reply("T", "x", "Open", "https://e.x"),
            json!({"msgtype": "actionCard", "actionCard": {
                "title": "T", "text": "x", "singleTitle": "Open", "singleURL": "https://e.x"}})
        );
        assert_eq!(robot_text_body("n"), text_reply("n", None));
        assert_eq!(
            robot_markdown_body("T", "x"),
            markdown_reply("T", "x", None)
        );
        assert_eq!(
            markdown_reply("T", "x", Some("staff01")),
            json!({"msgtype": "markdown", "markdown": {"title": "T", "text": "@staff01 x"},
                   "at": {"atUserIds": ["staff01"]}})
        );
    }

    #[test]
    fn builds_openapi_bodies() {
        let param = markdown_msg_param("T", "a \"b\"");
        assert_eq!(
            serde_json::from_str::<Value>(&param).unwrap(),
            json!({"title": "T", "text": "a \"b\""})
        );
        assert_eq!(
            batch_send_body("rc", &["u1", "u2"], MSG_KEY_MARKDOWN, &param),
            json!({"robotCode": "rc", "userIds": ["u1", "u2"], "msgKey": "sampleMarkdown", "msgParam": param})
        );
        let text = text_msg_param("hi");
        assert_eq!(
            group_send_body("rc", "cid", MSG_KEY_TEXT, &text),
            json!({"robotCode": "rc", "openConversationId": "cid", "msgKey": "sampleText", "msgParam": "{\"content\":\"hi\"}"})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&action_card_msg_param("T", "x", "Go", "https://e.x"))
                .unwrap(),
            json!({"title": "T", "text": "x", "singleTitle": "Go", "singleURL": "https://e.x"})
        );
    }

    #[test]
    fn signs_custom_robot_urls() {
        let url = "https://oapi.dingtalk.com/robot/send?access_token=abc";
        assert_eq!(signed_robot_url(url, None, NOW), url);
        assert_eq!(signed_robot_url(url, Some(""), NOW), url);
        let signed = signed_robot_url(url, Some("this is secret"), 1577262236757);
        assert_eq!(
            signed,
            format!(
                "{url}&timestamp=1577262236757&sign=hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D"
            )
        );
        assert!(
            signed_robot_url("https://hook.example/robot", Some("s"), NOW)
                .starts_with("https://hook.example/robot?timestamp=")
        );
    }

    #[test]
    fn reads_errors_in_both_shapes() {
        assert_eq!(api_error(br#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert_eq!(
            api_error(br#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Some((310000, "sign not match".into()))
        );
        assert_eq!(
            api_error(
                br#"{"code":"InvalidAuthentication","message":"token invalid","requestid":"r"}"#
            ),
            Some((-1, "InvalidAuthentication: token invalid".into()))
        );
        assert_eq!(
            api_error(br#"{"processQueryKey":"k","invalidStaffIdList":[]}"#),
            None
        );
        assert_eq!(api_error(b"<html>"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_requests_never_panic(
            (h, bytes) in random_request(&["timestamp", "sign"], 48),
        ) {
            // Without a valid sign this can only be refused.
            prop_assert!(verify(&h, &bytes, &verifier(), NOW).is_err());
            let _ = parse_message(&bytes);
            let _ = api_error(&bytes);
        }

        #[test]
        fn tampered_signatures_are_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let b = body(&group_text("hi"));
            let s = flip_bit(sign(SECRET, NOW).into_bytes(), pos, bit);
            let mut h = HeaderMap::new();
            h.insert("timestamp", NOW.to_string().parse().unwrap());
            set_or_remove(&mut h, "sign", &s);
            prop_assert_eq!(verify(&h, &b, &verifier(), NOW), Err(Rejection::BadSignature));
        }

        #[test]
        fn tampered_timestamps_are_refused(delta in 1i64..1_000_000) {
            let b = body(&group_text("hi"));
            let h = headers(NOW + delta, &sign(SECRET, NOW));
            prop_assert_eq!(verify(&h, &b, &verifier(), NOW), Err(Rejection::BadSignature));
        }

        /// DingTalk's sign covers the timestamp only, so a body changed in
        /// transit arrives with a valid sign: it is parsed or refused as
        /// malformed, never a panic and never a signature error.
        #[test]
        fn mutated_bodies_under_a_valid_sign_parse_or_are_malformed(
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
            random in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let h = headers(NOW, &sign(SECRET, NOW));
            let mutated = flip_bit(body(&group_text("hi")), pos, bit);
            for b in [&mutated, &random] {
                match verify(&h, b, &verifier(), NOW) {
                    Ok(Verdict::Message(m)) => prop_assert!(!m.text.is_empty()),
                    Ok(_) | Err(Rejection::Malformed(_)) => {}
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }

        #[test]
        fn any_text_survives_parsing(text in ".{0,64}") {
            if let Ok(Verdict::Message(m)) = parse_message(&body(&group_text(&text))) {
                prop_assert_eq!(m.text.trim(), m.text.as_str());
                prop_assert!(!m.text.is_empty());
            }
        }
    }
}
