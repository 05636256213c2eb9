//! IM webhook deliveries for benchmarks: signed DingTalk robot callbacks and
//! encrypted, signed Feishu `im.message.receive_v1` events, built from the
//! platforms' documented formulas. This is an implementation separate from
//! bot-runtime's verifier, so a benchmark run that is all "accepted" also
//! checks the two agree.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use hyper::header::{HeaderName, HeaderValue};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::loadgen::Prepared;

/// DingTalk's callback `sign` header (and custom robot `sign`):
/// `base64(HMAC-SHA256(key = app_secret, msg = timestamp_ms + "\n" + app_secret))`.
pub fn dingtalk_sign(app_secret: &str, timestamp_ms: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp_ms}\n{app_secret}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Feishu's `encrypt` field: `base64(iv | AES-256-CBC(key = SHA-256(encrypt_key), iv, PKCS#7(plaintext)))`.
pub fn feishu_encrypt(encrypt_key: &str, plaintext: &[u8], iv: [u8; 16]) -> String {
    let key: [u8; 32] = Sha256::digest(encrypt_key.as_bytes()).into();
    let ct = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut raw = Vec::with_capacity(16 + ct.len());
    raw.extend_from_slice(&iv);
    raw.extend_from_slice(&ct);
    STANDARD.encode(raw)
}

/// Feishu's `X-Lark-Signature`: `hex(SHA-256(timestamp + nonce + encrypt_key + body))`.
pub fn feishu_signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// Secrets and addresses shared by every delivery of a run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dingtalk_secret: String,
    pub dingtalk_robot_code: String,
    pub feishu_encrypt_key: String,
    pub feishu_token: String,
    pub feishu_app_id: String,
    /// Base of the reply sink, e.g. `http://127.0.0.1:9000` (DingTalk's
    /// `sessionWebhook` points there).
    pub sink_base: String,
    /// Distinct users (and conversations) the deliveries cycle through.
    pub users: u64,
    /// Makes ids unique across runs against the same store.
    pub run_id: String,
}

pub const DINGTALK_PATH: &str = "/webhooks/dingtalk";
pub const FEISHU_PATH: &str = "/webhooks/feishu";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header values built here are visible ASCII"),
    )
}

/// DingTalk HTTP-mode robot callback number `i`: a one-to-one text message
/// with a unique `msgId`, signed with the current time.
pub fn dingtalk_delivery(s: &Setup, i: u64) -> Prepared {
    let u = i % s.users.max(1);
    let now = now_ms();
    let body = json!({
        "conversationId": format!("cid{}{u:08}==", s.run_id),
        "atUsers": [],
        "chatbotCorpId": "dingbenchcorp",
        "chatbotUserId": "$:LWCP_v1:$benchbot",
        "msgId": format!("msg{}{i:010}", s.run_id),
        "senderNick": format!("User {u}"),
        "isAdmin": false,
        "senderStaffId": format!("staff{u:08}"),
        "sessionWebhookExpiredTime": now + 90 * 60 * 1000,
        "createAt": now,
        "senderCorpId": "dingbenchcorp",
        "conversationType": "1",
        "senderId": format!("$:LWCP_v1:$sender{u:08}"),
        "sessionWebhook": format!("{}/robot/sendBySession?session=s{}{u:08}", s.sink_base, s.run_id),
        "text": {"content": format!("hello bot, message {i}")},
        "robotCode": s.dingtalk_robot_code,
        "msgtype": "text",
    });
    // Each callback its own millisecond, as DingTalk's are: the runtime
    // binds a (timestamp, sign) pair to the one message it came with.
    // Spread over the 20 minutes around now, well inside the window.
    let ts = now_ms() - 600_000 + (i % 1_200_000) as i64;
    Prepared {
        path: DINGTALK_PATH.to_owned(),
        body: Bytes::from(serde_json::to_vec(&body).expect("JSON")),
        headers: vec![
            header("content-type", "application/json; charset=utf-8"),
            header("timestamp", &ts.to_string()),
            header("sign", &dingtalk_sign(&s.dingtalk_secret, ts)),
        ],
    }
}

/// Feishu event number `i`: a v2 `im.message.receive_v1` text message with
/// a unique `event_id` and `message_id`, encrypted with a random IV and
/// signed with a random nonce and the current time (seconds).
pub fn feishu_delivery(s: &Setup, i: u64) -> Prepared {
    let u = i % s.users.max(1);
    let now = now_ms();
    let event = json!({
        "schema": "2.0",
        "header": {
            "event_id": format!("ev{}{i:010}", s.run_id),
            "event_type": "im.message.receive_v1",
            "create_time": now.to_string(),
            "token": s.feishu_token,
            "app_id": s.feishu_app_id,
            "tenant_key": "benchtenant",
        },
        "event": {
            "sender": {
                "sender_id": {
                    "union_id": format!("on_{}{u:08}", s.run_id),
                    "user_id": format!("u{u:08}"),
                    "open_id": format!("ou_{}{u:08}", s.run_id),
                },
                "sender_type": "user",
                "tenant_key": "benchtenant",
            },
            "message": {
                "message_id": format!("om_{}{i:010}", s.run_id),
                "root_id": "",
                "parent_id": "",
                "create_time": now.to_string(),
                "chat_id": format!("oc_{}{u:08}", s.run_id),
                "chat_type": "p2p",
                "message_type": "text",
                "content": json!({"text": format!("hello bot, message {i}")}).to_string(),
                "mentions": [],
            },
        },
    });
    let plain = serde_json::to_vec(&event).expect("JSON");
    let encrypted = feishu_encrypt(&s.feishu_encrypt_key, &plain, rand::random());
    let body = json!({ "encrypt": encrypted }).to_string().into_bytes();
    let ts = (now_ms() / 1000).to_string();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let sig = feishu_signature(&ts, &nonce, &s.feishu_encrypt_key, &body);
    Prepared {
        path: FEISHU_PATH.to_owned(),
        body: Bytes::from(body),
        headers: vec![
            header("content-type", "application/json; charset=utf-8"),
            header("x-lark-request-timestamp", &ts),
            header("x-lark-request-nonce", &nonce),
            header("x-lark-signature", &sig),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::BlockDecryptMut;

    fn setup() -> Setup {
        Setup {
            dingtalk_secret: "ding-secret".into(),
            dingtalk_robot_code: "dingrobot".into(),
            feishu_encrypt_key: "feishu-key".into(),
            feishu_token: "feishu-token".into(),
            feishu_app_id: "cli_bench".into(),
            sink_base: "http://127.0.0.1:9".into(),
            users: 10,
            run_id: "r1".into(),
        }
    }

    #[test]
    fn dingtalk_sign_matches_the_documented_vector() {
        assert_eq!(
            dingtalk_sign("this is secret", 1577262236757),
            "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
        );
    }

    #[test]
    fn feishu_encrypt_reproduces_the_documented_vector() {
        // Feishu's docs: key "test key", plaintext "hello world".
        let vector = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";
        let raw = STANDARD.decode(vector).unwrap();
        let iv: [u8; 16] = raw[..16].try_into().unwrap();
        assert_eq!(feishu_encrypt("test key", b"hello world", iv), vector);
    }

    #[test]
    fn feishu_signature_is_plain_sha256_hex() {
        let expected = hex::encode(Sha256::digest(b"1700000000nkeybody"));
        assert_eq!(
            feishu_signature("1700000000", "n", "key", b"body"),
            expected
        );
    }

    #[test]
    fn deliveries_are_unique_and_well_formed() {
        let s = setup();
        let a = dingtalk_delivery(&s, 1);
        let b = dingtalk_delivery(&s, 2);
        let va: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        let vb: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
        assert_ne!(va["msgId"], vb["msgId"]);
        assert_eq!(va["conversationType"], "1");
        assert!(
            va["sessionWebhook"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:9/")
        );
        let get = |p: &Prepared, k: &str| {
            p.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .unwrap()
        };
        let ts: i64 = get(&a, "timestamp").parse().unwrap();
        assert_eq!(get(&a, "sign"), dingtalk_sign("ding-secret", ts));

        let f = feishu_delivery(&s, 7);
        let g = feishu_delivery(&s, 8);
        assert_ne!(
            get(&f, "x-lark-request-nonce"),
            get(&g, "x-lark-request-nonce")
        );
        let sig = feishu_signature(
            &get(&f, "x-lark-request-timestamp"),
            &get(&f, "x-lark-request-nonce"),
            "feishu-key",
            &f.body,
        );
        assert_eq!(get(&f, "x-lark-signature"), sig);
        // Decrypt it back with an independent path.
        let outer: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
        let raw = STANDARD.decode(outer["encrypt"].as_str().unwrap()).unwrap();
        let key: [u8; 32] = Sha256::digest(b"feishu-key").into();
        let iv: [u8; 16] = raw[..16].try_into().unwrap();
        let plain = cbc::Decryptor::<Aes256>::new(&key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&raw[16..])
            .unwrap();
        let ev: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(ev["header"]["event_id"], "evr10000000007");
        assert_eq!(ev["header"]["token"], "feishu-token");
        assert_eq!(ev["event"]["message"]["message_id"], "om_r10000000007");
    }
}
