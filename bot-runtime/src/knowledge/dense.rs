//! Dense retrieval: sentence embeddings from all-MiniLM-L6-v2 run by
//! llama.cpp (a GGUF written from the model's safetensors at set-up;
//! several times faster than candle's BERT per question, docs/benchmarks.md),
//! mean of the token vectors, unit length, compared by cosine. Catches
//! paraphrases that share few words ("my laptop" for "my own machine").
//! Vectors are cached by the text's hash, so a reload only embeds the
//! phrasings that changed.

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
/// question takes 2.4 ms at the median but 20 ms whenever the other vCPU
/// is busy (they meet at a barrier after every layer), with one 4.4 ms
/// steadily (docs/benchmarks.md); questions run side by side instead.
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
    cache: Mutex<HashMap<[u8; 32], Arc<Vec<f32>>>>,
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

    /// Unit vectors for `texts`, from the cache where known.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>, String> {
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
                cache.insert(keys[i], Arc::new(v));
            }
        }
        let cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
        Ok(keys.iter().filter_map(|k| cache.get(k).cloned()).collect())
    }

    /// A question's vector; not cached (questions rarely repeat, and the
    /// cache would grow with every user).
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
                out.push(unit(v));
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

/// `v` scaled to length 1 (cosine becomes a dot product).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// One vector per phrasing (question or alternative) of each entry, in
/// one contiguous array so a search is a single pass over memory.
pub struct DenseIndex {
    dim: usize,
    vectors: Vec<f32>,
    owners: Vec<usize>,
    entries: usize,
}

impl DenseIndex {
    pub fn new(rows: Vec<(usize, Arc<Vec<f32>>)>) -> Self {
        let dim = rows.first().map_or(0, |(_, v)| v.len());
        let entries = rows.iter().map(|(e, _)| e + 1).max().unwrap_or(0);
        let mut vectors = Vec::with_capacity(rows.len() * dim);
        let mut owners = Vec::with_capacity(rows.len());
        for (entry, v) in rows.into_iter().filter(|(_, v)| v.len() == dim) {
            vectors.extend_from_slice(&v);
            owners.push(entry);
        }
        Self {
            dim,
            vectors,
            owners,
            entries,
        }
    }

    /// Each entry's best cosine (over its phrasings) with `query`; entries
    /// without a vector get -1.
    pub fn cosines(&self, query: &[f32]) -> Vec<f32> {
        let mut best = vec![-1.0f32; self.entries];
        if self.dim == 0 || query.len() != self.dim {
            return best;
        }
        for (row, &entry) in self.vectors.chunks_exact(self.dim).zip(&self.owners) {
            let cos = dot(row, query);
            if cos > best[entry] {
                best[entry] = cos;
            }
        }
        best
    }

    /// Entries by cosine, best first, at most `limit`.
    pub fn ranking(cosines: &[f32], limit: usize) -> Vec<usize> {
        super::best(cosines, -1.0, limit)
    }
}

/// Dot product in eight lanes, so the compiler can vectorise it (a plain
/// float sum must keep its order and cannot be).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Reciprocal rank fusion of rankings (entry indices, best first): each
/// ranking gives an entry 1 / (60 + rank). Best first.
pub fn fuse(rankings: &[Vec<usize>]) -> Vec<usize> {
    const K: f32 = 60.0;
    let mut score: HashMap<usize, f32> = HashMap::new();
    for ranking in rankings {
        for (rank, &entry) in ranking.iter().enumerate() {
            *score.entry(entry).or_default() += 1.0 / (K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(usize, f32)> = score.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.into_iter().map(|(e, _)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        // 2 is second in both lists: it beats 1 and 3, each first in one.
        assert_eq!(fuse(&[vec![1, 2, 4], vec![3, 2, 5]])[0], 2);
        assert_eq!(fuse(&[vec![7], vec![]]), [7]);
        assert!(fuse(&[]).is_empty());
    }

    #[test]
    fn dense_search_keeps_each_entry_best_phrasing() {
        let v = |x: f32, y: f32| Arc::new(vec![x, y]);
        let idx = DenseIndex::new(vec![
            (0, v(1.0, 0.0)),
            (0, v(0.0, 1.0)),
            (1, v(0.6, 0.8)),
            (3, v(1.0, 0.0)),
        ]);
        let cos = idx.cosines(&[0.0, 1.0]);
        assert_eq!(cos, [1.0, 0.8, -1.0, 0.0], "entry 2 has no vector");
        assert_eq!(DenseIndex::ranking(&cos, 5), [0, 1, 3]);
        assert_eq!(DenseIndex::ranking(&cos, 1), [0]);
    }

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

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
