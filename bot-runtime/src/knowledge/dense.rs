//! Dense retrieval: sentence embeddings from all-MiniLM-L6-v2 with
//! candle's BERT (mean of the token vectors, unit length), compared by
//! cosine. Catches paraphrases that share few words ("my laptop" for "my
//! own machine"). Vectors are cached by the text's hash, so a reload only
//! embeds the phrasings that changed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// Word pieces per text: MiniLM was trained on 256 at most.
const MAX_TOKENS: usize = 256;
/// Texts embedded in one forward pass while indexing (small: the
/// activations of a batch are the memory peak of a reload).
const BATCH: usize = 8;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    cache: Mutex<HashMap<[u8; 32], Arc<Vec<f32>>>>,
}

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from
    /// `dir`; the error names the file.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let file = |name: &str| dir.join(name);
        let read = |name: &str| {
            std::fs::read_to_string(file(name))
                .map_err(|e| format!("{}: {e}", file(name).display()))
        };
        let config: Config = serde_json::from_str(&read("config.json")?)
            .map_err(|e| format!("{}: {e}", file("config.json").display()))?;
        let mut tokenizer = Tokenizer::from_file(file("tokenizer.json"))
            .map_err(|e| format!("{}: {e}", file("tokenizer.json").display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("tokenizer: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        let device = Device::Cpu;
        let weights = file("model.safetensors");
        // SAFETY (candle's requirement for mmap): the file is not modified
        // while mapped; set-up writes it once, atomically.
        // F32: in half precision candle's BERT on the CPU gives NaN vectors.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| format!("{}: {e}", weights.display()))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| format!("{}: {e}", weights.display()))?;
        Ok(Self {
            model,
            tokenizer,
            device,
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
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self
                .forward(&batch)
                .map_err(|e| format!("embedding failed: {e}"))?;
            let mut cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
            for (&i, v) in chunk.iter().zip(vectors) {
                cache.insert(keys[i], Arc::new(v));
            }
        }
        let cache = self.cache.lock().map_err(|_| "embedding cache poisoned")?;
        Ok(keys.iter().filter_map(|k| cache.get(k).cloned()).collect())
    }

    /// A question's vector; not cached (questions rarely repeat, and the
    /// cache would grow with every user).
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut v = self
            .forward(&[text])
            .map_err(|e| format!("embedding failed: {e}"))?;
        v.pop()
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

    fn forward(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(candle_core::Error::msg)?;
        let ids: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_ids(), &self.device))
            .collect::<Result<_, _>>()?;
        let mask: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<Result<_, _>>()?;
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&mask, 0)?;
        let types = ids.zeros_like()?;
        let out = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens (padding masked out), then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = out.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
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
        let mut order: Vec<usize> = (0..cosines.len()).filter(|&e| cosines[e] > -1.0).collect();
        let by = |a: &usize, b: &usize| cosines[*b].total_cmp(&cosines[*a]).then(a.cmp(b));
        if order.len() > limit {
            order.select_nth_unstable_by(limit, by);
            order.truncate(limit);
        }
        order.sort_by(by);
        order
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
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
