//! The local model: one GGUF file run in-process by llama.cpp (crate
//! `llama-cpp-2`), shared by every conversation. Requests are tokenized on
//! the blocking pool and handed to the generation thread (`engine`), which
//! batches all active conversations into one decode per step. Admission is
//! bounded: `parallel` conversations generate, `queue` more wait, and the
//! rest get `ModelError::Busy` (503 with Retry-After), never a pile-up.

mod engine;
mod metrics;
mod params;
mod prompt;
mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawdbot_config::LocalModelConfig;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use prometheus::core::Collector;
use tokio_stream::wrappers::UnboundedReceiverStream;

pub use crate::llama::{cpu_problem, model_file_problem};
pub use params::{DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, GenParams};

use self::engine::{EngineConfig, Event, Job};
use self::metrics::LocalMetrics;
use self::prompt::Turn;
use super::{ChatRequest, Chunk, ChunkStream, Completion, ModelError, Provider};

/// Tokens decoded in one step at most: prompt chunks share it with the
/// other conversations' next tokens.
const BATCH: u32 = 512;
/// What a 503 asks the client to wait.
const RETRY_AFTER_SECS: u64 = 2;

pub struct LocalModel {
    prompter: Arc<Prompter>,
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
    admission: Arc<Admission>,
    models: Vec<String>,
    timeout: Duration,
    metrics: LocalMetrics,
    reason: String,
}

/// What would stop the local model from starting, found without loading
/// it: the CPU, the file's presence, its GGUF header and its checksum.
pub fn startup_problem(cfg: &LocalModelConfig) -> Option<String> {
    cpu_problem().or_else(|| model_file_problem(Path::new(&cfg.path), cfg.sha256.as_deref()))
}

impl LocalModel {
    /// Checks the CPU and the file, loads the model and starts the
    /// generation thread. The error says what is wrong, naming the file.
    pub fn load(
        cfg: &LocalModelConfig,
        name: &str,
        timeout: Duration,
        reason: String,
    ) -> Result<Self, String> {
        if let Some(p) = startup_problem(cfg) {
            return Err(p);
        }
        let path = PathBuf::from(&cfg.path);
        let started = Instant::now();
        let params = LlamaModelParams::default().with_n_gpu_layers(cfg.gpu_layers);
        let model = LlamaModel::load_from_file(crate::llama::backend(), &path, &params).map_err(|e| {
            format!(
                "llama.cpp could not load model file {} ({e}): truncated, corrupt or an unsupported architecture",
                path.display()
            )
        })?;
        let template = chat_template(&model);
        let model = Arc::new(model);
        let threads = cfg
            .threads
            .map_or_else(crate::llama::default_threads, |t| t as i32);
        let engine = EngineConfig {
            context_per_sequence: cfg.context_size,
            kv_q8: cfg.kv_cache == clawdbot_config::KvCache::Q8_0,
            parallel: cfg.parallel,
            threads,
            batch: BATCH,
        };
        let metrics = LocalMetrics::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_model = model.clone();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("local-model".into())
            .spawn(move || engine::run(thread_model, engine, rx, thread_metrics, ready_tx))
            .map_err(|e| format!("cannot start the generation thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the generation thread stopped while starting".to_owned())??;
        let file_name = path
            .file_stem()
            .map_or_else(|| "local".to_owned(), |s| s.to_string_lossy().into_owned());
        let models = if name == "default" {
            vec![file_name]
        } else {
            vec![name.to_owned()]
        };
        tracing::info!(
            path = %path.display(),
            params = model.n_params(),
            context_per_sequence = cfg.context_size,
            parallel = cfg.parallel,
            threads,
            load_ms = started.elapsed().as_millis() as u64,
            "local model loaded"
        );
        Ok(Self {
            prompter: Arc::new(Prompter {
                model,
                template,
                context_per_sequence: cfg.context_size as usize,
            }),
            jobs: std::sync::Mutex::new(tx),
            admission: Arc::new(Admission {
                in_flight: AtomicUsize::new(0),
                waiting_gauge: metrics.queue_depth.clone(),
                active_gauge: metrics.active.clone(),
                capacity: (cfg.parallel + cfg.queue) as usize,
            }),
            models,
            timeout,
            metrics,
            reason,
        })
    }

    async fn start(
        &self,
        req: &ChatRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>, ModelError> {
        let params = GenParams::from_request(&req.extra).map_err(|(param, message)| {
            ModelError::Rejected {
                status: 400,
                message: format!("{message} (param {param})"),
                body: bytes::Bytes::new(),
            }
        })?;
        let permit = self
            .admission
            .try_acquire()
            .ok_or_else(|| ModelError::Busy {
                message: format!(
                    "the local model is busy: {} conversations are generating or waiting",
                    self.admission.capacity
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            })?;
        let turns = prompt::turns(&req.messages);
        let max_tokens = params.max_tokens;
        // Long conversations take many tokenizer passes to cut: off the
        // async workers.
        let prompter = self.prompter.clone();
        let prompt = tokio::task::spawn_blocking(move || prompter.tokenize(turns, max_tokens))
            .await
            .map_err(|e| ModelError::BadGateway(format!("prompt preparation failed: {e}")))?
            .map_err(ModelError::BadGateway)?;
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let now = Instant::now();
        let job = Job {
            prompt,
            params,
            deadline: now + self.timeout,
            queued_at: now,
            events,
            permit,
        };
        self.jobs
            .lock()
            .map_err(|_| ModelError::Unavailable("the local model stopped".into()))?
            .send(job)
            .map_err(|_| {
                ModelError::Unavailable("the local model's generation thread stopped".into())
            })?;
        Ok(rx)
    }

    fn chunks(&self, rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> ChunkStream {
        let model = self.models[0].clone();
        let stream = UnboundedReceiverStream::new(rx).flat_map(move |event| {
            let chunk = |c: Chunk| Chunk {
                model: Some(model.clone()),
                ..c
            };
            let items: Vec<Result<Chunk, ModelError>> = match event {
                Event::Text(content) => vec![Ok(chunk(Chunk {
                    content,
                    has_choices: true,
                    ..Chunk::default()
                }))],
                Event::Done {
                    finish_reason,
                    usage,
                } => vec![
                    Ok(chunk(Chunk {
                        finish_reason: Some(finish_reason.into()),
                        has_choices: true,
                        ..Chunk::default()
                    })),
                    Ok(chunk(Chunk {
                        usage: Some(usage),
                        ..Chunk::default()
                    })),
                ],
                Event::Failed(e) => vec![Err(e)],
            };
            futures_util::stream::iter(items)
        });
        Box::pin(stream)
    }
}

impl Provider for LocalModel {
    fn label(&self) -> &'static str {
        "local"
    }

    fn models(&self) -> &[String] {
        &self.models
    }

    fn reason(&self) -> &str {
        &self.reason
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        self.metrics.collectors()
    }

    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        async move { super::collect(self.stream(req).await?, self.models[0].clone()).await }.boxed()
    }

    fn stream<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ModelError>> {
        async move { Ok(self.chunks(self.start(req).await?)) }.boxed()
    }
}

/// What turns a conversation into prompt tokens; shared with the blocking
/// pool.
struct Prompter {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    context_per_sequence: usize,
}

impl Prompter {
    /// Templates and tokenizes the conversation, cut to leave room for the
    /// answer in the context window.
    fn tokenize(&self, turns: Vec<Turn>, max_tokens: u32) -> Result<Vec<LlamaToken>, String> {
        let ctx = self.context_per_sequence;
        // Room for the answer: what was asked, but at most half the window.
        let reserve = (max_tokens as usize).min(ctx / 2);
        let budget = ctx - reserve;
        let render = |turns: &[Turn]| -> Result<String, String> {
            let chat = turns
                .iter()
                .map(|t| {
                    LlamaChatMessage::new(t.role.clone(), t.content.replace('\0', ""))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.model
                .apply_chat_template(&self.template, &chat, true)
                .map_err(|e| format!("chat template failed: {e}"))
        };
        let vocab = self.model.vocab();
        let count = |turns: &[Turn]| {
            render(turns).map_or(usize::MAX, |p| {
                vocab.tokenize(p.as_bytes(), true, true).len()
            })
        };
        let fitted = prompt::fit(turns, budget, count);
        let mut tokens = vocab.tokenize(render(&fitted)?.as_bytes(), true, true);
        // Only when even empty messages overflow: keep the start.
        tokens.truncate(budget.max(1));
        Ok(tokens)
    }
}

/// The chat template in the file; for files without one (base models), the
/// template of their family, else ChatML.
fn chat_template(model: &LlamaModel) -> LlamaChatTemplate {
    if let Ok(t) = model.chat_template(None) {
        return t;
    }
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let name = if arch.starts_with("gemma") {
        "gemma"
    } else {
        "chatml"
    };
    tracing::warn!(
        arch,
        template = name,
        "the model file has no chat template; using its family's"
    );
    LlamaChatTemplate::new(name).expect("a template name has no NUL byte")
}

/// Counts requests admitted (generating or waiting) against the capacity.
struct Admission {
    in_flight: AtomicUsize,
    waiting_gauge: prometheus::IntGauge,
    active_gauge: prometheus::IntGauge,
    capacity: usize,
}

impl Admission {
    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()?;
        self.waiting_gauge.inc();
        Some(Permit {
            admission: self.clone(),
            started: false,
        })
    }
}

/// One admitted request; dropping it frees its place.
pub struct Permit {
    admission: Arc<Admission>,
    started: bool,
}

impl Permit {
    /// The request left the queue for a sequence slot.
    fn started(&mut self) {
        if !self.started {
            self.started = true;
            self.admission.waiting_gauge.dec();
            self.admission.active_gauge.inc();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.started {
            self.admission.active_gauge.dec();
        } else {
            self.admission.waiting_gauge.dec();
        }
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
