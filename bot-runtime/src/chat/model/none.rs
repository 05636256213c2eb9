//! The provider used when no model is configured: it answers every turn with
//! a reply that says how to configure one, so a fresh `make run` works.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{ChatRequest, Chunk, ChunkStream, Completion, ModelError, Provider, Usage};

pub const NO_MODEL_REPLY: &str = "No model is configured yet. Set MODEL_ENDPOINT (an OpenAI-compatible base URL ending in /v1), MODEL_API_KEY and MODEL_NAME, or model.endpoint in the config file, then restart bot-runtime.";

pub struct NoModel {
    name: String,
    models: Vec<String>,
    reason: String,
}

impl NoModel {
    pub fn new(name: &str, reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            models: vec![name.to_owned()],
            reason: reason.to_owned(),
        }
    }
}

impl Provider for NoModel {
    fn label(&self) -> &'static str {
        "none"
    }

    fn models(&self) -> &[String] {
        &self.models
    }

    fn reason(&self) -> &str {
        &self.reason
    }

    fn has_model(&self) -> bool {
        false
    }

    fn complete<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        let done = Completion {
            model: self.name.clone(),
            content: NO_MODEL_REPLY.to_owned(),
            finish_reason: Some("stop".into()),
            usage: Some(Usage::default()),
            raw: None,
            source: None,
        };
        async move { Ok(done) }.boxed()
    }

    fn stream<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ModelError>> {
        let chunks = vec![
            Ok(Chunk {
                model: Some(self.name.clone()),
                content: NO_MODEL_REPLY.to_owned(),
                has_choices: true,
                ..Chunk::default()
            }),
            Ok(Chunk {
                model: Some(self.name.clone()),
                finish_reason: Some("stop".into()),
                has_choices: true,
                ..Chunk::default()
            }),
            Ok(Chunk {
                model: Some(self.name.clone()),
                usage: Some(Usage::default()),
                ..Chunk::default()
            }),
        ];
        async move { Ok(Box::pin(futures_util::stream::iter(chunks)) as ChunkStream) }.boxed()
    }
}
