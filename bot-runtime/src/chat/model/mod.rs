//! Model providers: something that turns a conversation into a stream of
//! text deltas. The OpenAI-compatible upstream client, the in-process
//! llama.cpp model and the "no model" provider implement it; `from_config`
//! picks one (`model.backend`) and says why.

mod breaker;
pub mod local;
mod none;
mod openai;
mod sse;
mod types;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use clawdbot_config::{ModelBackend, ModelConfig};
use futures_util::Stream;
use futures_util::future::BoxFuture;

pub use breaker::Breaker;
pub use local::LocalModel;
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
    /// Why this backend serves: the `model.backend` choice and, for
    /// `auto`, what was found (logged at start, shown by `/health` and
    /// `/v1/models`).
    fn reason(&self) -> &str;
    /// False for the provider that stands in when no model is configured.
    fn has_model(&self) -> bool {
        true
    }
    /// Each upstream endpoint (host and port, never a key) and whether its
    /// circuit breaker is open now; read when `/metrics` is scraped.
    fn circuits(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
    /// The provider's own metrics, registered with the runtime's.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        Vec::new()
    }
}

/// A whole answer from a stream, for providers that only stream.
pub async fn collect(mut stream: ChunkStream, model: String) -> Result<Completion, ModelError> {
    use futures_util::StreamExt;
    let mut done = Completion {
        model,
        ..Completion::default()
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        done.content.push_str(&chunk.content);
        done.finish_reason = chunk.finish_reason.or(done.finish_reason);
        done.usage = chunk.usage.or(done.usage);
        done.source = chunk.source.or(done.source);
    }
    Ok(done)
}

/// Builds the provider `model.backend` asks for. `auto`: the upstream when
/// an endpoint is set, else the local model when its file is present and
/// loads, else none, with the reason kept for `/health`. An explicit
/// `local` that cannot load is an error: the operator asked for it.
pub fn from_config(cfg: &ModelConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let timeout = Duration::from_secs(cfg.timeout_secs);
    Ok(
        match (
            cfg.backend.unwrap_or(ModelBackend::Auto),
            cfg.effective_backend(),
        ) {
            (requested, ModelBackend::Openai) => {
                let why = if requested == ModelBackend::Openai {
                    "model.backend is openai"
                } else {
                    "model.backend is auto and an endpoint is set (MODEL_ENDPOINT)"
                };
                Arc::new(OpenAiUpstream::new(cfg, why)?)
            }
            (_, ModelBackend::Local) => {
                let reason = format!("model.backend is local: {}", cfg.local.path);
                Arc::new(
                    LocalModel::load(&cfg.local, &cfg.name, timeout, reason)
                        .map_err(|e| anyhow::anyhow!("model.backend is local, but {e}"))?,
                )
            }
            (_, ModelBackend::None) => Arc::new(NoModel::new(&cfg.name, "model.backend is none")),
            (_, ModelBackend::Auto) => {
                let reason = format!(
                    "model.backend is auto, no endpoint is set, and model file {} loaded",
                    cfg.local.path
                );
                match LocalModel::load(&cfg.local, &cfg.name, timeout, reason) {
                    Ok(local) => Arc::new(local),
                    Err(why) => {
                        tracing::warn!(reason = %why, "no local model; answering without a model");
                        Arc::new(NoModel::new(
                            &cfg.name,
                            &format!(
                                "model.backend is auto, no endpoint is set, and the local model is unusable: {why}"
                            ),
                        ))
                    }
                }
            }
        },
    )
}
