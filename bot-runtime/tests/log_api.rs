//! The conversation log through HTTP: the history endpoint read from the
//! log store (it outlives the session store), the admin-only conversations
//! endpoint with keyset pagination, readiness and metrics.

mod common;
mod logdb;

use std::collections::HashSet;
use std::time::Duration;

use clawdbot_config::{ApiKey, Scope, Secret};
use common::*;
use logdb::*;
use serde_json::{Value, json};

fn keys() -> Vec<ApiKey> {
    let key = |k: &str, name: &str, scope| ApiKey {
        key: Secret::new(k),
        scope,
        name: Some(name.into()),
    };
    vec![
        key("alice-key-0001", "alice", Scope::User),
        key("bob-key-000001", "bob", Scope::User),
        key("admin-key-0001", "ops", Scope::Admin),
    ]
}

async fn get(url: &str, key: &str) -> (u16, Value) {
    let r = client().get(url).bearer_auth(key).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, key: &str, body: Value) -> (u16, String) {
    let r = client()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn history_comes_from_the_log_store_and_outlives_the_session_store() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let mock = mock().await;
        let url = db.url.clone();
        let cfg = config_for(Some(&mock), |c| {
            c.auth.api_keys = keys();
            c.database.url = Some(Secret::new(url));
        });
        let rt = start(cfg.clone()).await;
        let (s, body) = post(
            &rt.url("/api/v1/chat"),
            "alice-key-0001",
            json!({"message": "first", "user_id": "u-7"}),
        )
        .await;
        assert_eq!(s, 200, "{engine:?}: {body}");
        let sid = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, text) = post(
            &rt.url("/api/v1/chat"),
            "alice-key-0001",
            json!({"message": "second", "session_id": sid, "stream": true}),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(sse_events(&text).last().unwrap().0, "done");
        let path = format!("/api/v1/sessions/{sid}/messages");
        let (s, now) = get(&rt.url(&path), "alice-key-0001").await;
        assert_eq!(s, 200, "{now}");
        rt.stop().await;

        // A new process: the in-memory session store is empty, the log is not.
        let rt = start(cfg).await;
        let (s, later) = get(&rt.url(&path), "alice-key-0001").await;
        assert_eq!(s, 200, "{engine:?}: {later}");
        assert_eq!(later, now, "the same history before and after the restart");
        let msgs = later["messages"].as_array().unwrap();
        let roles: Vec<_> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
        assert_eq!(
            (msgs[0]["content"].as_str(), msgs[2]["content"].as_str()),
            (Some("first"), Some("second"))
        );
        assert_eq!(msgs[1]["content"], "Hello from the mock upstream.");
        assert!(msgs[0]["created_at"].as_str().unwrap().ends_with('Z'));
        // The owner check holds on logged sessions: other keys see 404.
        let (s, e) = get(&rt.url(&path), "bob-key-000001").await;
        assert_eq!(s, 404, "{e}");
        assert_eq!(get(&rt.url(&path), "admin-key-0001").await.0, 200);
        let unknown = "/api/v1/sessions/0123456789abcdef0123456789abcdef/messages";
        assert_eq!(get(&rt.url(unknown), "alice-key-0001").await.0, 404);
        rt.stop().await;
    }
}

#[tokio::test]
async fn conversations_are_for_admins_and_page_with_an_opaque_cursor() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let mock = mock().await;
        let url = db.url.clone();
        let rt = start(config_for(Some(&mock), |c| {
            c.auth.api_keys = keys();
            c.database.url = Some(Secret::new(url));
        }))
        .await;
        for i in 0..5 {
            let user = if i % 2 == 0 { "even" } else { "odd" };
            let (s, b) = post(
                &rt.url("/v1/chat/completions"),
                "bob-key-000001",
                json!({"model": "mock-model", "user": user, "stream": i == 4,
                       "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": format!("q{i}")}]}),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
        let list = rt.url("/api/v1/conversations");
        let (s, e) = get(&list, "alice-key-0001").await;
        assert_eq!(s, 403, "{e}");
        assert_eq!(e["error"]["code"], "admin_required");

        // Exchanges are written asynchronously: wait for all five.
        assert!(
            eventually(Duration::from_secs(10), || async {
                get(&format!("{list}?limit=500"), "admin-key-0001").await.1["data"]
                    .as_array()
                    .is_some_and(|d| d.len() == 5)
            })
            .await
        );
        let mut seen = Vec::new();
        let mut next = format!("{list}?limit=2");
        loop {
            let (s, page) = get(&next, "admin-key-0001").await;
            assert_eq!(s, 200, "{page}");
            seen.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => next = format!("{list}?limit=2&cursor={c}"),
                None => break,
            }
        }
        let inputs: Vec<_> = seen
            .iter()
            .map(|r| r["user_input"].as_str().unwrap())
            .collect();
        assert_eq!(
            inputs,
            ["q0", "q1", "q2", "q3", "q4"],
            "{engine:?}: time order, each once"
        );
        assert!(
            seen.iter()
                .all(|r| r["channel"] == "openai" && r["model"] == "mock-model")
        );
        assert_eq!(seen[4]["bot_response"], "Hello from the mock upstream.");
        let ids: HashSet<_> = seen.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 5);

        let (_, odd) = get(&format!("{list}?user_id=odd"), "admin-key-0001").await;
        assert_eq!(odd["data"].as_array().unwrap().len(), 2);
        let (_, none) = get(
            &format!("{list}?since=2999-01-01T00:00:00Z"),
            "admin-key-0001",
        )
        .await;
        assert_eq!(none["data"], json!([]));
        for (q, param) in [
            ("limit=0", "limit"),
            ("since=today", "since"),
            ("cursor=abc", "cursor"),
            ("x=1", "x"),
        ] {
            let (s, e) = get(&format!("{list}?{q}"), "admin-key-0001").await;
            assert_eq!(
                (s, e["error"]["param"].as_str()),
                (400, Some(param)),
                "{q}: {e}"
            );
        }
        rt.stop().await;
    }
}

#[tokio::test]
async fn a_dead_database_fails_readiness_by_name_while_answers_are_spilled() {
    let mock = mock().await;
    let rt = start(config_for(Some(&mock), |c| {
        c.database.url = Some(Secret::new("postgres://postgres:hunter2@127.0.0.1:1/none"));
    }))
    .await;
    let r = client().get(rt.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failing"], json!(["database"]), "{body}");
    assert!(!body.to_string().contains("hunter2"));

    let (s, b) = post_json(&rt.url("/api/v1/chat"), json!({"message": "hi"})).await;
    assert_eq!(s, 200, "answers do not wait for the log database: {b}");
    let metrics = rt.metrics_text().await;
    for name in [
        "clawdbot_log_queue_depth",
        "clawdbot_log_write_failures_total",
        "clawdbot_log_spilled_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            let m = rt.metrics_text().await;
            m.lines()
                .any(|l| l.starts_with("clawdbot_log_spilled_total ") && !l.ends_with(" 0"))
        })
        .await,
        "the exchange went to the spill file"
    );
    rt.stop().await;
}
