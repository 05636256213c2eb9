//! Dense retrieval's model: sentence embeddings from all-MiniLM-L6-v2 run
//! by llama.cpp (a GGUF written from the model's safetensors at set-up;
//! several times faster than candle's BERT per question, docs/benchmarks.md),
//! mean of the token vectors. Catches paraphrases that share few words
//! ("my laptop" for "my own machine"); the index the vectors go into is
//! `vectors.rs`. Phrasings' vectors are cached by the text's hash, so a
//! reload only embeds the phrasings that changed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};

use super::vectors::Code;
use crate::llama;

/// Word pieces per text: MiniLM was trained on 256 at most.
const MAX_TOKENS: usize = 256;

/// One worker's llama.cpp context: how many texts and tokens a forward
/// pass takes, and on how many threads.
#[derive(Clone, Copy)]
struct Pass {
    tokens: usize,
    texts: usize,
    threads: i32,
}

/// Indexing: several texts share a pass; its token count squared sizes
/// the attention buffers (12 heads x 512 x 512 floats), all CPUs.
const INDEXING: Pass = Pass {
    tokens: 512,
    texts: 16,
    threads: 0,
};
/// A question: a dozen word pieces. One llama.cpp thread each: with two, a
/// question takes 2.4 ms at the median when questions come back to back
/// but 9-14 ms when they come a millisecond or more apart, as real ones
/// do (the second thread waits for an idle vCPU to wake, and the two meet
/// at a barrier after every layer); with one, 4.2-5.5 ms either way
/// (docs/benchmarks.md). Questions run side by side instead.
const QUESTION: Pass = Pass {
    tokens: MAX_TOKENS,
    texts: 1,
    threads: 1,
};

type Vectors = Result<Vec<Vec<f32>>, String>;

/// Texts to embed and where the vectors go.
struct Job {
    texts: Vec<String>,
    reply: SyncSender<Vectors>,
}

type Jobs = Arc<Mutex<Receiver<Job>>>;

pub struct Embedder {
    /// To the threads that own a llama.cpp context each (a context
    /// borrows its model, so both live there): one per CPU for questions,
    /// one for indexing, so a reload never holds a question up.
    questions: Sender<Job>,
    indexing: Sender<Job>,
    cache: Mutex<HashMap<[u8; 32], Arc<Code>>>,
}

impl Embedder {
    /// Loads the GGUF at `path` and starts its threads; the error names
    /// the file and the problem.
    pub fn load(path: &Path) -> Result<Self, String> {
        if let Some(problem) =
            llama::cpu_problem().or_else(|| llama::model_file_problem(path, None))
        {
            return Err(problem);
        }
        let model =
            LlamaModel::load_from_file(llama::backend(), path, &LlamaModelParams::default())
                .map_err(|e| format!("llama.cpp could not load {} ({e})", path.display()))?;
        let model = Arc::new(model);
        let shown = path.display().to_string();
        let (questions, rx) = std::sync::mpsc::channel();
        let rx: Jobs = Arc::new(Mutex::new(rx));
        for _ in 0..llama::default_threads() {
            start_worker(&model, &shown, QUESTION, rx.clone())?;
        }
        let (indexing, rx) = std::sync::mpsc::channel();
        start_worker(&model, &shown, INDEXING, Arc::new(Mutex::new(rx)))?;
        Ok(Self {
            questions,
            indexing,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The vectors of `texts` (8-bit), from the cache where known.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Arc<Code>>, String> {
        let keys: Vec<[u8; 32]> = texts
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        let missing: Vec<usize> = {
            let cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
            (0..texts.len())
                .filter(|&i| !cache.contains_key(&keys[i]))
                .collect()
        };
        if !missing.is_empty() {
            let texts = missing.iter().map(|&i| texts[i].to_owned()).collect();
            let vectors = ask(&self.indexing, texts)?;
            let mut cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
            for (&i, v) in missing.iter().zip(vectors) {
                cache.insert(keys[i], Arc::new(Code::of(&v)));
            }
        }
        let cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
        Ok(keys.iter().filter_map(|k| cache.get(k).cloned()).collect())
    }

    /// A question's vector, of any length (the index scales it); not
    /// cached (questions rarely repeat, and the cache would grow with
    /// every user).
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        ask(&self.questions, vec![text.to_owned()])?
            .pop()
            .ok_or_else(|| "embedding failed: no vector".to_owned())
    }

    /// Keeps only the vectors of `texts` (after a reload dropped others).
    pub fn retain(&self, texts: &[&str]) {
        let keep: std::collections::HashSet<[u8; 32]> = texts
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|k, _| keep.contains(k));
        }
    }
}

fn ask(workers: &Sender<Job>, texts: Vec<String>) -> Vectors {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let stopped = || "the embedding threads have stopped".to_owned();
    workers.send(Job { texts, reply }).map_err(|_| stopped())?;
    answer.recv().map_err(|_| stopped())?
}

/// Starts a worker thread and waits until its context exists.
fn start_worker(
    model: &Arc<LlamaModel>,
    shown: &str,
    pass: Pass,
    jobs: Jobs,
) -> Result<(), String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (model, shown) = (model.clone(), shown.to_owned());
    std::thread::Builder::new()
        .name("embeddings".into())
        .spawn(move || work(&model, &shown, pass, &jobs, ready_tx))
        .map_err(|e| format!("cannot start an embedding thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "an embedding thread stopped while starting".to_owned())?
}

/// A worker: one context, one job at a time, until the `Embedder` is
/// dropped.
fn work(
    model: &LlamaModel,
    shown: &str,
    pass: Pass,
    jobs: &Jobs,
    ready: SyncSender<Result<(), String>>,
) {
    let threads = if pass.threads > 0 {
        pass.threads
    } else {
        llama::default_threads()
    };
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(pass.tokens as u32))
        .with_n_batch(pass.tokens as u32)
        .with_n_ubatch(pass.tokens as u32)
        .with_n_seq_max(pass.texts as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(llama::backend(), params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "{shown}: cannot create the llama.cpp context: {e}"
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let vocab = model.vocab();
    let sep = vocab.sep();
    let mut batch = LlamaBatch::new(pass.tokens, pass.texts as i32);
    loop {
        // The lock is held only while waiting for the next job.
        let Some(job) = jobs.lock().ok().and_then(|rx| rx.recv().ok()) else {
            return;
        };
        let tokens: Vec<Vec<LlamaToken>> = job
            .texts
            .iter()
            .map(|t| truncated(vocab.tokenize(t.as_bytes(), true, false), sep))
            .collect();
        let mut out = Vec::with_capacity(tokens.len());
        let result = passes(&tokens, pass).into_iter().try_for_each(|group| {
            batch.clear();
            for (seq, t) in group.iter().enumerate() {
                batch
                    .add_sequence(t, seq as i32, true)
                    .map_err(|e| format!("embedding batch: {e}"))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| format!("embedding failed: {e}"))?;
            for seq in 0..group.len() {
                let v = ctx.embeddings_seq_ith(seq as i32).map_err(|_| {
                    format!("{shown} gave no sentence vector (not an embedding model?)")
                })?;
                out.push(v.to_vec());
            }
            Ok::<_, String>(())
        });
        let _ = job.reply.send(result.map(|()| out));
    }
}

/// At most `MAX_TOKENS` word pieces, still ending with the separator the
/// model saw in training.
fn truncated(mut tokens: Vec<LlamaToken>, sep: LlamaToken) -> Vec<LlamaToken> {
    if tokens.len() > MAX_TOKENS {
        tokens.truncate(MAX_TOKENS - 1);
        tokens.push(sep);
    }
    tokens
}

/// Consecutive groups of texts that fit one forward pass each.
fn passes(tokens: &[Vec<LlamaToken>], pass: Pass) -> Vec<&[Vec<LlamaToken>]> {
    let mut groups = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, t) in tokens.iter().enumerate() {
        if i > start && (used + t.len() > pass.tokens || i - start == pass.texts) {
            groups.push(&tokens[start..i]);
            (start, used) = (i, 0);
        }
        used += t.len();
    }
    if start < tokens.len() {
        groups.push(&tokens[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_respect_the_token_and_text_limits() {
        let t = |n: usize| vec![LlamaToken(1); n];
        let texts = vec![t(300), t(200), t(100), t(MAX_TOKENS)];
        let sizes: Vec<usize> = passes(&texts, INDEXING).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [2, 2], "300+200 fit 512, 100+256 too");
        let many: Vec<_> = (0..INDEXING.texts + 1).map(|_| t(3)).collect();
        assert_eq!(passes(&many, INDEXING).len(), 2);
        assert_eq!(passes(&many[..2], QUESTION).len(), 2, "one text a pass");
        assert!(passes(&[], INDEXING).is_empty());
        let long = truncated(t(MAX_TOKENS + 10), LlamaToken(102));
        assert_eq!(
            (long.len(), long[MAX_TOKENS - 1]),
            (MAX_TOKENS, LlamaToken(102))
        );
    }
}
