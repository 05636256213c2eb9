//! The generation thread. It owns the llama.cpp context, admits requests
//! into free sequence slots and decodes every active sequence in one batch
//! per step (continuous batching): a new prompt's prefill rides along with
//! the other conversations' next tokens, so nobody waits for a whole answer
//! to finish before starting. Runs on a thread of its own, never on the
//! async runtime's workers.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::LocalMetrics;
use super::params::GenParams;
use super::text::{StopMatcher, Utf8Decoder};
use crate::chat::model::{ModelError, Usage};

/// One request, tokenized and ready.
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    pub params: GenParams,
    pub deadline: Instant,
    pub queued_at: Instant,
    pub events: UnboundedSender<Event>,
    /// Held for the job's life: frees its place in the admission count.
    pub permit: super::Permit,
}

#[derive(Debug)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
    },
    Failed(ModelError),
}

pub struct EngineConfig {
    pub context_per_sequence: u32,
    /// 8-bit keys and values (else 16-bit).
    pub kv_q8: bool,
    pub parallel: u32,
    pub threads: i32,
    /// Most tokens decoded in one step (prefill chunks are cut to fit).
    pub batch: u32,
}

struct Seq {
    job: Job,
    fed: usize,
    pos: i32,
    next: Option<LlamaToken>,
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    utf8: Utf8Decoder,
    stops: StopMatcher,
    generated: u32,
}

/// Runs until every sender of `jobs` is gone.
pub fn run(
    model: Arc<LlamaModel>,
    cfg: EngineConfig,
    jobs: Receiver<Job>,
    metrics: LocalMetrics,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(cfg.context_per_sequence * cfg.parallel))
        .with_n_seq_max(cfg.parallel)
        .with_n_batch(cfg.batch)
        .with_n_ubatch(cfg.batch)
        .with_n_threads(cfg.threads)
        .with_n_threads_batch(cfg.threads);
    // 8-bit keys and values halve the cache (4 conversations of 2048
    // tokens: 94 MB instead of 188 MB for SmolLM2-135M) at no measurable
    // quality cost, but prompts are read slower (model.local.kv_cache);
    // llama.cpp's flash attention (on by default where supported) reads them.
    let params = if cfg.kv_q8 {
        params
            .with_type_k(KvCacheType::Q8_0)
            .with_type_v(KvCacheType::Q8_0)
    } else {
        params
    };
    let mut ctx = match model.new_context(crate::llama::backend(), params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot create the llama.cpp context: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut slots: Vec<Option<Seq>> = (0..cfg.parallel).map(|_| None).collect();
    let mut batch = LlamaBatch::new(cfg.batch as usize, 1);
    let limit = i32::try_from(cfg.context_per_sequence).unwrap_or(i32::MAX);
    loop {
        // Admit: block while idle, otherwise take what is waiting.
        if slots.iter().all(Option::is_none) {
            match jobs.recv() {
                Ok(job) => admit_at(&mut slots, 0, job, &metrics),
                Err(_) => return,
            }
        }
        while let Some(free) = slots.iter().position(Option::is_none) {
            match jobs.try_recv() {
                Ok(job) => admit_at(&mut slots, free, job, &metrics),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        drop_abandoned(&mut slots, &mut ctx);
        let decoded = fill_batch(&mut slots, &mut batch, cfg.batch as usize);
        if decoded == 0 {
            continue;
        }
        let started = Instant::now();
        if let Err(e) = ctx.decode(&mut batch) {
            // Which tokens made it into the cache is unknown: every
            // conversation in flight ends with the error.
            tracing::error!(error = %e, tokens = decoded, "llama.cpp decode failed");
            for i in 0..slots.len() {
                fail(
                    &mut slots,
                    i,
                    &mut ctx,
                    ModelError::BadGateway(format!("local model decode failed: {e}")),
                );
            }
            continue;
        }
        metrics.observe_step(decoded, started.elapsed());
        for i in 0..slots.len() {
            let Some(seq) = slots[i].as_mut() else {
                continue;
            };
            let Some(at) = seq.logits_at.take() else {
                continue;
            };
            let token = seq.sampler.sample(&ctx, at);
            if !model.vocab().is_eog(token) {
                metrics.completion_tokens.inc();
            }
            if let Some(reason) = emit(seq, token, &model, limit) {
                finish(&mut slots, i, &mut ctx, reason);
            }
        }
    }
}

fn admit_at(slots: &mut [Option<Seq>], i: usize, mut job: Job, metrics: &LocalMetrics) {
    if job.prompt.is_empty() {
        // Nothing to decode would leave the slot waiting forever.
        let _ = job.events.send(Event::Failed(ModelError::BadGateway(
            "the prompt has no tokens".into(),
        )));
        return;
    }
    metrics
        .queue_wait
        .observe(job.queued_at.elapsed().as_secs_f64());
    metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
    job.permit.started();
    let p = &job.params;
    let seed = p.seed.unwrap_or_else(rand::random);
    let sampler = if p.temperature <= 0.0 {
        LlamaSampler::greedy()
    } else {
        // llama.cpp's usual chain: cut the tail, then temperature, then draw.
        LlamaSampler::chain_simple([
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(p.top_p, 1),
            LlamaSampler::min_p(0.05, 1),
            LlamaSampler::temp(p.temperature),
            LlamaSampler::dist(seed),
        ])
    };
    slots[i] = Some(Seq {
        stops: StopMatcher::new(p.stop.clone()),
        job,
        fed: 0,
        pos: 0,
        next: None,
        logits_at: None,
        sampler,
        utf8: Utf8Decoder::default(),
        generated: 0,
    });
}

/// Ends sequences whose caller went away (the stream was dropped) or whose
/// deadline passed.
fn drop_abandoned(slots: &mut [Option<Seq>], ctx: &mut LlamaContext<'_>) {
    let now = Instant::now();
    for i in 0..slots.len() {
        let Some(seq) = slots[i].as_ref() else {
            continue;
        };
        if seq.job.events.is_closed() {
            release(slots, i, ctx);
        } else if now >= seq.job.deadline {
            fail(
                slots,
                i,
                ctx,
                ModelError::Timeout(
                    "the local model did not finish in time (model.timeout_secs)".into(),
                ),
            );
        }
    }
}

/// Puts every generating sequence's next token in the batch first, then
/// prompt chunks in the room left. Returns the number of tokens added.
fn fill_batch(slots: &mut [Option<Seq>], batch: &mut LlamaBatch, room: usize) -> usize {
    batch.clear();
    let mut used = 0usize;
    for (id, seq) in slots.iter_mut().enumerate() {
        let Some(seq) = seq else { continue };
        if used < room
            && let Some(token) = seq.next.take()
        {
            if batch.add(token, seq.pos, &[id as i32], true).is_ok() {
                seq.logits_at = Some(batch.n_tokens() - 1);
                seq.pos += 1;
                used += 1;
            } else {
                seq.next = Some(token);
            }
        }
    }
    for (id, seq) in slots.iter_mut().enumerate() {
        let Some(seq) = seq else { continue };
        let rest = seq.job.prompt.len() - seq.fed;
        if rest == 0 || used >= room {
            continue;
        }
        let take = rest.min(room - used);
        for k in 0..take {
            let last = seq.fed + k + 1 == seq.job.prompt.len();
            if batch
                .add(seq.job.prompt[seq.fed + k], seq.pos, &[id as i32], last)
                .is_err()
            {
                break;
            }
            if last {
                seq.logits_at = Some(batch.n_tokens() - 1);
            }
            seq.pos += 1;
            used += 1;
        }
        seq.fed += take;
    }
    used
}

/// Sends the sampled token's text; returns a finish reason when the
/// sequence is done.
fn emit(seq: &mut Seq, token: LlamaToken, model: &LlamaModel, limit: i32) -> Option<&'static str> {
    let vocab = model.vocab();
    if vocab.is_eog(token) {
        return Some("stop");
    }
    seq.generated += 1;
    let text = seq.utf8.push(&vocab.token_to_piece(token, false, None));
    let pushed = seq.stops.push(&text);
    if !pushed.emit.is_empty() {
        let _ = seq.job.events.send(Event::Text(pushed.emit));
    }
    if pushed.stopped {
        seq.stops = StopMatcher::new(Vec::new());
        seq.utf8 = Utf8Decoder::default();
        return Some("stop");
    }
    if seq.generated >= seq.job.params.max_tokens || seq.pos >= limit {
        return Some("length");
    }
    seq.next = Some(token);
    None
}

fn finish(slots: &mut [Option<Seq>], i: usize, ctx: &mut LlamaContext<'_>, reason: &'static str) {
    if let Some(seq) = slots[i].as_mut() {
        let tail = seq.utf8.finish();
        let mut rest = seq.stops.push(&tail).emit;
        rest.push_str(&seq.stops.finish());
        if !rest.is_empty() {
            let _ = seq.job.events.send(Event::Text(rest));
        }
        let prompt = seq.job.prompt.len() as u64;
        let completion = u64::from(seq.generated);
        let _ = seq.job.events.send(Event::Done {
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            },
        });
    }
    release(slots, i, ctx);
}

fn fail(slots: &mut [Option<Seq>], i: usize, ctx: &mut LlamaContext<'_>, e: ModelError) {
    if let Some(seq) = slots[i].as_ref() {
        let _ = seq.job.events.send(Event::Failed(e));
    }
    release(slots, i, ctx);
}

/// Frees the slot and its part of the KV cache.
fn release(slots: &mut [Option<Seq>], i: usize, ctx: &mut LlamaContext<'_>) {
    if slots[i].take().is_some() {
        let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
    }
}
