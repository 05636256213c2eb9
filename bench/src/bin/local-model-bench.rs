//! The local model's reference points for `make bench`: a plain llama.cpp
//! generation loop and candle's quantized llama on the same GGUF file and
//! the same prompt tokens, so bot-runtime's end-to-end numbers have
//! something to be compared with. Prints one JSON object.
//!
//!   local-model-bench MODEL.gguf PROMPT_FILE [--threads N] [--decode N]
//!
//! PROMPT_FILE holds the chat-templated prompt text (what bot-runtime
//! feeds llama.cpp); both engines get llama.cpp's tokens of it. Greedy
//! decoding, end-of-turn ignored, so every run decodes exactly N tokens.

use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::json;

#[derive(Parser)]
struct Args {
    model: String,
    prompt_file: String,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value_t = 128)]
    decode: usize,
    /// Skip candle (it takes a while).
    #[arg(long)]
    no_candle: bool,
    /// 8-bit key/value cache, as bot-runtime uses.
    #[arg(long)]
    kv_q8: bool,
    /// Also decode this many sequences together (one batch per step) and
    /// report their aggregate tokens/s.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let prompt = std::fs::read_to_string(&args.prompt_file).context("prompt file")?;
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();

    let started = Instant::now();
    let model = LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let ctx_len = (tokens.len() + args.decode + 16) as u32;
    let mut params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_len.max(512) * args.parallel as u32))
        .with_n_seq_max(args.parallel as u32)
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(args.threads)
        .with_n_threads_batch(args.threads);
    if args.kv_q8 {
        params = params
            .with_type_k(KvCacheType::Q8_0)
            .with_type_v(KvCacheType::Q8_0);
    }
    let mut ctx = model.new_context(&backend, params)?;

    // Warm-up: one short decode, then clear.
    let mut batch = LlamaBatch::new(512, 1);
    batch.add(tokens[0], 0, &[0], true)?;
    ctx.decode(&mut batch)?;
    ctx.clear_kv_cache();

    let started = Instant::now();
    for (chunk_no, chunk) in tokens.chunks(512).enumerate() {
        batch.clear();
        for (i, t) in chunk.iter().enumerate() {
            let pos = chunk_no * 512 + i;
            batch.add(*t, pos as i32, &[0], pos + 1 == tokens.len())?;
        }
        ctx.decode(&mut batch)?;
    }
    let prefill_s = started.elapsed().as_secs_f64();
    let mut sampler = LlamaSampler::greedy();
    let first = tokens.len() as i32;
    let started = Instant::now();
    for pos in first..first + args.decode as i32 {
        let t = sampler.sample(&ctx, batch.n_tokens() - 1);
        batch.clear();
        batch.add(t, pos, &[0], true)?;
        ctx.decode(&mut batch)?;
    }
    let decode_s = started.elapsed().as_secs_f64();
    let short = &tokens[..tokens.len().min(64)];
    let one = parallel_decode(&mut ctx, short, 1, args.decode)?;
    let aggregate = parallel_decode(&mut ctx, short, args.parallel, args.decode)?;
    let raw = json!({
        "one_short_tok_s": one,
        "aggregate_tok_s": aggregate,
        "parallel": args.parallel,
        "kv_q8": args.kv_q8,
        "load_ms": load_ms,
        "prompt_tokens": tokens.len(),
        "prefill_tok_s": tokens.len() as f64 / prefill_s,
        "decode_tok_s": args.decode as f64 / decode_s,
    });
    let ids: Vec<u32> = tokens.iter().map(|t| t.0 as u32).collect();
    drop(ctx);
    drop(model);

    let candle = if args.no_candle {
        serde_json::Value::Null
    } else {
        candle_run(&args, &ids)?
    };
    println!(
        "{}",
        json!({"llama_cpp": raw, "candle": candle, "threads": args.threads})
    );
    Ok(())
}

/// `n` sequences, each with `prompt` (a short one), decoded together
/// greedily for `steps` steps: aggregate tokens/s.
fn parallel_decode(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    prompt: &[llama_cpp_2::token::LlamaToken],
    n: usize,
    steps: usize,
) -> Result<f64> {
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(512.max(prompt.len() * n), n as i32);
    for s in 0..n {
        for (i, t) in prompt.iter().enumerate() {
            batch.add(*t, i as i32, &[s as i32], i + 1 == prompt.len())?;
        }
    }
    ctx.decode(&mut batch)?;
    let mut samplers: Vec<LlamaSampler> = (0..n).map(|_| LlamaSampler::greedy()).collect();
    let mut last: Vec<i32> = (0..n)
        .map(|s| ((s + 1) * prompt.len() - 1) as i32)
        .collect();
    let started = Instant::now();
    for step in 0..steps {
        let next: Vec<_> = (0..n).map(|s| samplers[s].sample(ctx, last[s])).collect();
        batch.clear();
        for (s, t) in next.into_iter().enumerate() {
            batch.add(t, (prompt.len() + step) as i32, &[s as i32], true)?;
            last[s] = s as i32;
        }
        ctx.decode(&mut batch)?;
    }
    Ok((n * steps) as f64 / started.elapsed().as_secs_f64())
}

/// candle's quantized llama on the same file and tokens (CPU, its own
/// thread pool, which `RAYON_NUM_THREADS` bounds).
fn candle_run(args: &Args, ids: &[u32]) -> Result<serde_json::Value> {
    let device = Device::Cpu;
    let started = Instant::now();
    let mut file = std::fs::File::open(&args.model)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
    let mut logits = model.forward(&input, 0)?;
    let prefill_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for pos in ids.len()..ids.len() + args.decode {
        let next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        let input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
        logits = model.forward(&input, pos)?;
    }
    let decode_s = started.elapsed().as_secs_f64();
    Ok(json!({
        "load_ms": load_ms,
        "prefill_tok_s": ids.len() as f64 / prefill_s,
        "decode_tok_s": args.decode as f64 / decode_s,
    }))
}
