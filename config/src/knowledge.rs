//! The knowledge base and dialog rules: what the bot answers before, or
//! together with, the model.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the default embedding model is (set-up fetches it into models/).
pub const DEFAULT_EMBEDDINGS_PATH: &str = "models/all-MiniLM-L6-v2.Q8_0.gguf";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// A folder of FAQ files (`.md`, `.yaml`, `.yml`, also in subfolders),
    /// e.g. a mounted ConfigMap (env `KNOWLEDGE_PATH`). Unset: no FAQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Confidence (0..1) from which the bot answers with the FAQ entry
    /// itself, citing it, without calling the model.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub answer_threshold: f32,
    /// Confidence (0..1) from which an entry is given to the model as
    /// context when the bot does not answer with it directly.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub context_threshold: f32,
    /// Entries at most given to the model as context.
    #[schemars(range(min = 1, max = 20))]
    pub context_entries: usize,
    /// Seconds between checks of the folder for changed files (a mounted
    /// ConfigMap changes in place); 0 turns reloading off.
    pub reload_secs: u64,
    /// GGUF file of the sentence-embedding model (all-MiniLM-L6-v2, written
    /// by set-up from its safetensors) for dense retrieval next to the
    /// lexical one; no file there: lexical only.
    pub embeddings_path: String,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            path: None,
            answer_threshold: 0.8,
            context_threshold: 0.25,
            context_entries: 3,
            reload_secs: 5,
            embeddings_path: DEFAULT_EMBEDDINGS_PATH.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DialogConfig {
    /// Checked in order before the FAQ and the model; the first match
    /// answers with its fixed reply.
    pub rules: Vec<DialogRule>,
}

/// One pinned answer, e.g. a greeting, the hand-off to a human ("转人工"),
/// business hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DialogRule {
    /// Shown as the reply's source and in logs.
    pub name: String,
    /// Messages that match when equal to one of these, ignoring case,
    /// surrounding spaces and trailing punctuation.
    #[serde(default)]
    pub exact: Vec<String>,
    /// A regular expression (Rust `regex` syntax) searched in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The reply, in Markdown.
    pub reply: String,
}
