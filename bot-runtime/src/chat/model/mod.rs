//! Model providers: something that turns a conversation into a stream of
//! text deltas. The OpenAI-compatible upstream client and the "no model"
//! provider implement it; the embedded local model will too.

mod breaker;
mod none;
mod openai;
mod sse;
mod types;

use std::pin::Pin;
use std::sync::Arc;

use clawdbot_config::{ModelBackend, ModelConfig};
use futures_util::Stream;
use futures_util::future::BoxFuture;

pub use breaker::Breaker;
pub use none::NoModel;
pub use openai::OpenAiUpstream;
pub use sse::SseDecoder;
pub use types::*;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ModelError>> + Send>>;

/// A model backend. `complete` answers in one piece; `stream` yields chunks
/// as the model produces them. Dropping the stream cancels the work.
pub trait Provider: Send + Sync + 'static {
    /// Metric label: `openai`, `none`, ...
    fn label(&self) -> &'static str;
    /// Model names callers may ask for (`GET /v1/models`).
    fn models(&self) -> &[String];
    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>>;
    fn stream<'a>(&'a self, req: &'a ChatRequest)
    -> BoxFuture<'a, Result<ChunkStream, ModelError>>;
    /// Each upstream endpoint (host and port, never a key) and whether its
    /// circuit breaker is open now; read when `/metrics` is scraped.
    fn circuits(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
}

/// Builds the provider the configuration asks for.
pub fn from_config(cfg: &ModelConfig) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(match cfg.effective_backend() {
        ModelBackend::Openai => Arc::new(OpenAiUpstream::new(cfg)?),
        ModelBackend::None => Arc::new(NoModel::new(&cfg.name)),
    })
}
