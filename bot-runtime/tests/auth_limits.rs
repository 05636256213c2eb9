//! API keys, scopes, throttling, rate limits, CORS and trusted proxies.

mod common;

use clawdbot_config::{ApiKey, Scope, Secret};
use common::*;
use serde_json::{Value, json};

fn keys() -> Vec<ApiKey> {
    vec![
        ApiKey {
            key: Secret::new("alice-key-123"),
            scope: Scope::User,
            name: Some("alice".into()),
        },
        ApiKey {
            key: Secret::new("bob-key-45678"),
            scope: Scope::User,
            name: Some("bob".into()),
        },
        ApiKey {
            key: Secret::new("admin-key-999"),
            scope: Scope::Admin,
            name: Some("ops".into()),
        },
    ]
}

async fn chat_as(rt: &Runtime, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = client().post(rt.url("/api/v1/chat")).json(&body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get_as(rt: &Runtime, key: &str, path: &str) -> u16 {
    client()
        .get(rt.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn keys_are_required_and_scoped() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| c.auth.api_keys = keys())).await;
    let (s, b) = chat_as(&rt, None, json!({"message": "hi"})).await;
    assert_eq!(s, 401);
    assert_eq!(assert_error_shape(&b)["code"], "invalid_api_key");
    assert_eq!(
        chat_as(&rt, Some("wrong-key-000"), json!({"message": "hi"}))
            .await
            .0,
        401
    );
    assert_eq!(mock.requests(), 0);

    let (s, b) = chat_as(&rt, Some("alice-key-123"), json!({"message": "hi"})).await;
    assert_eq!(s, 200);
    let sid = b["session_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/sessions/{sid}/messages");
    assert_eq!(get_as(&rt, "alice-key-123", &path).await, 200);
    assert_eq!(
        get_as(&rt, "bob-key-45678", &path).await,
        404,
        "users cannot read others' sessions"
    );
    assert_eq!(get_as(&rt, "admin-key-999", &path).await, 200, "admins can");
    let (s, _) = chat_as(
        &rt,
        Some("bob-key-45678"),
        json!({"message": "hi", "session_id": sid}),
    )
    .await;
    assert_eq!(s, 404, "users cannot continue others' sessions");

    // Health, metrics and the page stay open.
    for open in ["/health", "/health/live", "/health/ready", "/metrics", "/"] {
        assert_eq!(
            client().get(rt.url(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
    let r = client().get(rt.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let health: serde_json::Value = client()
        .get(rt.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["auth"], "keys");
}

#[tokio::test]
async fn repeated_bad_keys_are_throttled() {
    let rt = start(config_for(None, |c| {
        c.auth.api_keys = keys();
        c.auth.max_failures = 3;
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(
            chat_as(&rt, Some("guess-000000"), json!({"message": "x"}))
                .await
                .0,
            401
        );
    }
    let r = client()
        .post(rt.url("/api/v1/chat"))
        .bearer_auth("alice-key-123")
        .json(&json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "blocked even with a good key until the window ends"
    );
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_error_shape(&r.json().await.unwrap());
}

#[tokio::test]
async fn clients_are_rate_limited_by_address() {
    let rt = start(config_for(None, |c| {
        c.server.rate_limit.requests_per_second = 0.5;
        c.server.rate_limit.burst = 2;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    }))
    .await;
    let send = |xff: &'static str| {
        let url = rt.url("/v1/models");
        async move {
            client()
                .get(url)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(send("203.0.113.1").await.status(), 200);
    assert_eq!(send("203.0.113.1").await.status(), 200);
    let r = send("203.0.113.1").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // The trusted proxy forwards another client: it has its own bucket.
    assert_eq!(send("203.0.113.2").await.status(), 200);
    // Health is never rate limited.
    for _ in 0..5 {
        assert_eq!(
            client()
                .get(rt.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let rt = start(config_for(None, |c| {
        c.server.rate_limit.requests_per_second = 0.5;
        c.server.rate_limit.burst = 1;
    }))
    .await;
    let get = |xff: &'static str| {
        client()
            .get(rt.url("/v1/models"))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(get("198.51.100.1").await.unwrap().status(), 200);
    // A new claimed address does not buy a new bucket.
    assert_eq!(get("198.51.100.2").await.unwrap().status(), 429);
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let rt = start(config_for(None, |c| {
        c.server.cors_allowed_origins = vec!["https://chat.example.com".into()]
    }))
    .await;
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, rt.url("/api/v1/chat"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://chat.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
