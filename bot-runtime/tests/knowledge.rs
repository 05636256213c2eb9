//! The knowledge base and dialog rules end to end: the shipped bilingual
//! FAQ (examples/knowledge) with the real embedding model (models/, fetched
//! by `make test`), answers cited without a model, retrieval-augmented
//! model calls (the prompt checked at the mock upstream), no-model misses,
//! hot reload and malformed files.

mod common;

use std::time::Duration;

use clawdbot_config::{DialogRule, ModelBackend, RuntimeConfig};
use common::{config_for, get_json, mock, post_json, start};
use serde_json::{Value, json};

const FAQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/knowledge");
const EMBEDDINGS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/all-MiniLM-L6-v2.Q8_0.gguf"
);

fn with_faq(cfg: &mut RuntimeConfig, folder: &str) {
    assert!(
        std::path::Path::new(EMBEDDINGS).is_file(),
        "{EMBEDDINGS} is missing: run scripts/fetch-models.sh (make test does)"
    );
    cfg.knowledge.path = Some(folder.into());
    cfg.knowledge.embeddings_path = EMBEDDINGS.into();
}

fn no_model(change: impl FnOnce(&mut RuntimeConfig)) -> RuntimeConfig {
    config_for(None, |c| {
        c.model.backend = Some(ModelBackend::None);
        change(c);
    })
}

async fn chat(rt: &common::Runtime, message: &str) -> Value {
    let (status, body) = post_json(&rt.url("/api/v1/chat"), json!({"message": message})).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn paraphrases_find_their_entry_in_both_languages() {
    let kb = bot_runtime::knowledge::KnowledgeBase::load(&clawdbot_config::KnowledgeConfig {
        path: Some(FAQ.into()),
        embeddings_path: EMBEDDINGS.into(),
        ..Default::default()
    });
    assert!(kb.dense(), "the embedding model loaded");
    for (question, id) in [
        ("how can I start clawdbot on my laptop?", "run-locally"),
        (
            "What do I need to do to get answers from GPT-4 instead of the small model?",
            "model-provider",
        ),
        ("my bot stays silent in the team group", "no-reply"),
        ("服务器需要多大内存", "zh-resources"),
        ("钉钉可以用吗？", "zh-channels"),
        ("群里的机器人为什么不理我", "zh-no-reply"),
    ] {
        let hits = kb.search(question);
        assert_eq!(
            hits.first().map(|h| h.entry.id.as_str()),
            Some(id),
            "{question}: {hits:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confident_match_is_answered_from_the_faq_and_cited() {
    let rt = start(no_model(|c| with_faq(c, FAQ))).await;
    let body = chat(&rt, "Which chat platforms does ClawdBot support?").await;
    assert_eq!(
        body["source"],
        json!({"kind": "faq", "id": "channels", "title": "Which chat platforms does ClawdBot support?"})
    );
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .starts_with("DingTalk, Feishu/Lark"),
        "{body}"
    );
    assert_eq!(body["model"], "knowledge");
    let body = chat(&rt, "机器人不回复怎么办").await;
    assert_eq!(body["source"]["id"], "zh-no-reply", "{body}");
    let (_, health) = get_json(&rt.url("/health")).await;
    assert_eq!(health["knowledge"]["entries"], 14, "{health}");
    assert!(
        rt.metrics_text()
            .await
            .contains("clawdbot_knowledge_requests_total{outcome=\"answered\"} 2")
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_a_miss_says_it_does_not_know() {
    let rt = start(no_model(|c| with_faq(c, FAQ))).await;
    let body = chat(&rt, "What is the capital of France?").await;
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .starts_with("Sorry, I don't know"),
        "{body}"
    );
    assert!(body.get("source").is_none(), "{body}");
    let body = chat(&rt, "今天天气怎么样？").await;
    assert!(
        body["reply"].as_str().unwrap().starts_with("抱歉"),
        "{body}"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weaker_match_goes_to_the_model_with_the_top_entries_in_its_prompt() {
    let upstream = mock().await;
    let rt = start(config_for(Some(&upstream), |c| {
        with_faq(c, FAQ);
        c.model.system_prompt = Some("You are ClawdBot's helper.".into());
        // Nothing is sure enough to answer alone: the model answers.
        c.knowledge.answer_threshold = 1.0;
    }))
    .await;
    let body = chat(&rt, "Can the bot talk to my Slack workspace threads?").await;
    assert_eq!(body["reply"], "Hello from the mock upstream.", "{body}");
    let sent = upstream.last_request().unwrap();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(system.starts_with("You are ClawdBot's helper."), "{system}");
    assert!(
        system.contains("[FAQ channels] Q: Which chat platforms does ClawdBot support?"),
        "{system}"
    );
    assert!(
        system.contains("DingTalk, Feishu/Lark, WeCom (WeChat Work) and Slack"),
        "{system}"
    );
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"role": "user", "content": "Can the bot talk to my Slack workspace threads?"})
    );
    assert!(
        rt.metrics_text()
            .await
            .contains("clawdbot_knowledge_requests_total{outcome=\"augmented\"} 1")
    );

    // A question the FAQ knows nothing about reaches the model untouched.
    chat(&rt, "What is the capital of France?").await;
    let sent = upstream.last_request().unwrap();
    assert!(
        !sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("[FAQ"),
        "{sent}"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_rules_answer_before_the_faq_and_the_model() {
    let upstream = mock().await;
    let rt = start(config_for(Some(&upstream), |c| {
        with_faq(c, FAQ);
        c.dialog.rules = vec![
            DialogRule {
                name: "human".into(),
                exact: vec!["转人工".into()],
                regex: None,
                reply: "正在为您转接人工客服。".into(),
            },
            DialogRule {
                name: "hours".into(),
                exact: vec![],
                regex: Some("(?i)business hours".into()),
                reply: "Mon-Fri 9:00-18:00".into(),
            },
        ];
    }))
    .await;
    let body = chat(&rt, "转人工！").await;
    assert_eq!(body["reply"], "正在为您转接人工客服。");
    assert_eq!(
        body["source"],
        json!({"kind": "rule", "id": "human", "title": "human"})
    );
    let body = chat(&rt, "What are your Business Hours?").await;
    assert_eq!(body["reply"], "Mon-Fri 9:00-18:00");
    assert_eq!(upstream.requests(), 0, "no model call");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_is_reloaded_and_a_malformed_one_skipped() {
    let dir = common::temp_dir("faq");
    let faq = dir.join("office.md");
    std::fs::write(
        &faq,
        "## Where is the office?\nid: office\n\nIn Hangzhou.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("broken.yaml"),
        "- question: fine\n  answer: ok\n- question: [unclosed\n",
    )
    .unwrap();
    let rt = start(no_model(|c| {
        with_faq(c, dir.to_str().unwrap());
        c.knowledge.reload_secs = 1;
    }))
    .await;
    assert_eq!(
        chat(&rt, "Where is the office?").await["reply"],
        "In Hangzhou."
    );
    let (_, health) = get_json(&rt.url("/health")).await;
    let skipped = health["knowledge"]["skipped"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(skipped.starts_with("broken.yaml:"), "{health}");
    assert_eq!(health["knowledge"]["entries"], 1, "{health}");

    std::fs::write(
        &faq,
        "## Where is the office?\nid: office\n\nIn Shanghai since 2026.\n",
    )
    .unwrap();
    let mut reply = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reply = chat(&rt, "Where is the office?").await["reply"].clone();
        if reply == "In Shanghai since 2026." {
            break;
        }
    }
    assert_eq!(reply, "In Shanghai since 2026.");
    rt.stop().await;
}
