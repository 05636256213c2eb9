//! The `Guide`: a model provider in front of the real one for the bot's
//! own conversations (web chat, `/api/v1/chat`, IM). For the latest user
//! message it tries, in order: a dialog rule (fixed reply); an FAQ entry
//! matched with confidence at least `knowledge.answer_threshold` (the
//! entry's answer, cited, no model call); otherwise the model, with the
//! entries above `knowledge.context_threshold` in its system prompt.
//! Without a model (`backend: none`) a miss says it does not know (with no
//! knowledge base at all, the "no model" reply says how to set one up).

use std::borrow::Cow;
use std::sync::Arc;

use clawdbot_config::KnowledgeConfig;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus::core::Collector;
use prometheus::{IntCounterVec, Opts};
use serde_json::{Value, json};

use super::rules::Rules;
use super::{Hit, KnowledgeBase};
use crate::chat::model::{
    ChatRequest, Chunk, ChunkStream, Completion, ModelError, Provider, Source, Usage, collect,
    message_text,
};

/// What the bot does with one message.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Answer with this text, from this source, without a model.
    Reply {
        text: String,
        source: Option<Source>,
        model: &'static str,
    },
    /// Ask the model this: the request as it came, or with FAQ context.
    Model(Cow<'a, ChatRequest>),
}

pub struct Guide {
    inner: Arc<dyn Provider>,
    rules: Rules,
    kb: Arc<KnowledgeBase>,
    answer_threshold: f32,
    context_threshold: f32,
    outcomes: IntCounterVec,
}

impl Guide {
    pub fn new(
        inner: Arc<dyn Provider>,
        rules: Rules,
        kb: Arc<KnowledgeBase>,
        cfg: &KnowledgeConfig,
    ) -> Self {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "clawdbot_knowledge_requests_total",
                "Bot messages by what answered them: rule, answered (an FAQ entry), augmented (the model with FAQ context), miss (the model alone, or no answer without a model).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        Self {
            inner,
            rules,
            kb,
            answer_threshold: cfg.answer_threshold,
            context_threshold: cfg.context_threshold,
            outcomes,
        }
    }

    /// What to do with one request. The search embeds the question, so it
    /// runs on the blocking pool.
    pub async fn decide<'a>(&self, req: &'a ChatRequest) -> Decision<'a> {
        let question = req
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(message_text)
            .unwrap_or_default();
        if let Some(rule) = self.rules.find(&question) {
            self.count("rule");
            return Decision::Reply {
                text: rule.reply.to_owned(),
                source: Some(Source {
                    kind: "rule",
                    id: rule.name.to_owned(),
                    title: rule.name.to_owned(),
                }),
                model: "dialog-rules",
            };
        }
        let hits = if self.kb.index().is_empty() {
            Vec::new()
        } else {
            let (kb, q) = (self.kb.clone(), question.clone());
            tokio::task::spawn_blocking(move || kb.search(&q))
                .await
                .unwrap_or_default()
        };
        if let Some(best) = hits.first()
            && best.confidence >= self.answer_threshold
        {
            self.count("answered");
            return Decision::Reply {
                text: best.entry.answer.clone(),
                source: Some(cite(best)),
                model: "knowledge",
            };
        }
        let context: Vec<&Hit> = hits
            .iter()
            .filter(|h| h.confidence >= self.context_threshold)
            .collect();
        // No model: with a knowledge base the bot says it does not know;
        // without one the "no model" provider says how to configure one.
        if !self.inner.has_model() && self.kb.folder().is_some() {
            self.count("miss");
            return Decision::Reply {
                text: dont_know(&question, &context),
                source: None,
                model: "knowledge",
            };
        }
        if context.is_empty() {
            self.count("miss");
            return Decision::Model(Cow::Borrowed(req));
        }
        self.count("augmented");
        Decision::Model(Cow::Owned(with_context(req, &context)))
    }

    fn count(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
    }
}

fn cite(hit: &Hit) -> Source {
    Source {
        kind: "faq",
        id: hit.entry.id.clone(),
        title: hit.entry.question.clone(),
    }
}

/// Said without a model when no entry is sure enough; close entries are
/// offered as questions the user could ask.
fn dont_know(question: &str, close: &[&Hit]) -> String {
    let zh = super::has_cjk(question);
    let mut text = if zh {
        "抱歉，我暂时无法回答这个问题。".to_owned()
    } else {
        "Sorry, I don't know the answer to that yet.".to_owned()
    };
    if !close.is_empty() {
        text.push_str(if zh {
            "\n\n您可以试试这些问题：\n"
        } else {
            "\n\nYou could ask one of these:\n"
        });
        for h in close {
            text.push_str(&format!("\n- {}", h.entry.question));
        }
    }
    text
}

/// The request with the FAQ entries added to its system prompt (a system
/// message of its own when there is none).
pub fn with_context(req: &ChatRequest, hits: &[&Hit]) -> ChatRequest {
    let mut block = String::from(
        "Answer the user's question using the FAQ entries below when they are relevant. Quote commands and settings exactly. If the entries do not answer the question, say so briefly instead of guessing.\n",
    );
    for h in hits {
        block.push_str(&format!(
            "\n[FAQ {}] Q: {}\nA: {}\n",
            h.entry.id, h.entry.question, h.entry.answer
        ));
    }
    let mut out = req.clone();
    match out.messages.first_mut() {
        Some(first) if first.get("role").and_then(Value::as_str) == Some("system") => {
            let existing = message_text(first);
            first["content"] = json!(format!("{existing}\n\n{block}"));
        }
        _ => out
            .messages
            .insert(0, json!({"role": "system", "content": block})),
    }
    out
}

fn fixed_chunks(text: String, source: Option<Source>, model: &str) -> ChunkStream {
    let model = Some(model.to_owned());
    let chunks = vec![
        Ok(Chunk {
            model: model.clone(),
            content: text,
            has_choices: true,
            source,
            ..Chunk::default()
        }),
        Ok(Chunk {
            model: model.clone(),
            finish_reason: Some("stop".into()),
            has_choices: true,
            ..Chunk::default()
        }),
        Ok(Chunk {
            model,
            usage: Some(Usage::default()),
            ..Chunk::default()
        }),
    ];
    Box::pin(futures_util::stream::iter(chunks))
}

impl Provider for Guide {
    fn label(&self) -> &'static str {
        self.inner.label()
    }

    fn models(&self) -> &[String] {
        self.inner.models()
    }

    fn reason(&self) -> &str {
        self.inner.reason()
    }

    fn circuits(&self) -> Vec<(String, bool)> {
        self.inner.circuits()
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.outcomes.clone())]
    }

    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        async move {
            match self.decide(req).await {
                Decision::Reply {
                    text,
                    source,
                    model,
                } => collect(fixed_chunks(text, source, model), model.to_owned()).await,
                Decision::Model(req) => self.inner.complete(&req).await,
            }
        }
        .boxed()
    }

    fn stream<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ModelError>> {
        async move {
            match self.decide(req).await {
                Decision::Reply {
                    text,
                    source,
                    model,
                } => Ok(fixed_chunks(text, source, model)),
                Decision::Model(req) => self.inner.stream(&req).await,
            }
        }
        .boxed()
    }
}
