//! Property test over real HTTP: random bodies to the JSON endpoints are
//! either answered or refused with a 4xx whose JSON names the field; never
//! a 5xx, never a dropped connection.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-3.0f64..3.0).prop_map(|f| json!(f)),
        "[a-f0-9 ]{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("mock-model"),
            Just("user"),
            Just("system"),
            Just("text"),
            Just("hi")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("message".to_string()),
                    Just("session_id".to_string()),
                    Just("user_id".to_string()),
                    Just("stream".to_string()),
                    Just("model".to_string()),
                    Just("messages".to_string()),
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("type".to_string()),
                    Just("temperature".to_string()),
                    Just("max_tokens".to_string()),
                    Just("stream_options".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Raw bodies too: truncated JSON, binary noise.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => arb_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => arb_value().prop_flat_map(|v| {
            let bytes = serde_json::to_vec(&v).unwrap();
            let n = bytes.len();
            (Just(bytes), 0..=n).prop_map(|(b, cut)| b[..cut].to_vec())
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn random_bodies_never_cause_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (runtime, _mock) = rt.block_on(async {
        let mock = mock().await;
        let runtime = start(config_for(Some(&mock), |c| c.sessions.turn_wait_secs = 0)).await;
        (runtime, mock)
    });
    let http = client();
    let cfg = ProptestConfig {
        cases: 192,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(body in arb_body(), openai in any::<bool>())| {
        let path = if openai { "/v1/chat/completions" } else { "/api/v1/chat" };
        let (status, text) = rt.block_on(async {
            let r = http.post(runtime.url(path)).header("content-type", "application/json").body(body.clone()).send().await.expect("connection kept");
            (r.status().as_u16(), r.text().await.unwrap())
        });
        prop_assert!(status < 500, "{path} {} -> {status} {text}", String::from_utf8_lossy(&body));
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).expect("error bodies are JSON");
            prop_assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            if status == 400 || status == 404 {
                prop_assert!(v["error"]["param"].as_str().is_some_and(|p| !p.is_empty()), "no field named: {text}");
            }
        } else {
            prop_assert_eq!(status, 200);
        }
    });
}
