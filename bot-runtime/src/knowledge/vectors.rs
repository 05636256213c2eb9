//! The dense index: one 8-bit vector per phrasing, a cosine scan over all
//! of them, and reciprocal rank fusion with the lexical ranking.
//!
//! Unit vectors are stored as 8-bit integers with a scale each (scalar
//! quantization): a quarter of the memory of 32-bit floats (7.7 MB instead
//! of 31 MB for 20,000 phrasings), and the scan over them reads a quarter
//! of the bytes (0.7 ms instead of 1.1 at the median, and a steadier tail;
//! docs/benchmarks.md). A cosine moves by about 0.002, well below any
//! threshold's resolution.

use std::collections::HashMap;
use std::sync::Arc;

/// A unit vector in 8 bits: `codes[i] * scale` is component i.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    codes: Vec<i8>,
    scale: f32,
}

impl Code {
    /// `v` scaled to length 1 (cosine becomes a dot product), then
    /// quantized so its largest component is +-127.
    pub fn of(v: &[f32]) -> Self {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let top = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if norm == 0.0 || top == 0.0 || !norm.is_finite() {
            return Self {
                codes: vec![0; v.len()],
                scale: 0.0,
            };
        }
        let step = top / 127.0;
        Self {
            codes: v.iter().map(|x| (x / step).round() as i8).collect(),
            scale: step / norm,
        }
    }

    pub fn dim(&self) -> usize {
        self.codes.len()
    }
}

/// One code per phrasing (question or alternative) of each entry, in one
/// contiguous array so a search is a single pass over memory.
pub struct DenseIndex {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    owners: Vec<usize>,
    entries: usize,
}

impl DenseIndex {
    pub fn new(rows: Vec<(usize, Arc<Code>)>) -> Self {
        let dim = rows.first().map_or(0, |(_, c)| c.dim());
        let entries = rows.iter().map(|(e, _)| e + 1).max().unwrap_or(0);
        let mut codes = Vec::with_capacity(rows.len() * dim);
        let mut scales = Vec::with_capacity(rows.len());
        let mut owners = Vec::with_capacity(rows.len());
        for (entry, c) in rows.into_iter().filter(|(_, c)| c.dim() == dim) {
            codes.extend_from_slice(&c.codes);
            scales.push(c.scale);
            owners.push(entry);
        }
        Self {
            dim,
            codes,
            scales,
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
        let q = Code::of(query);
        let dots = dots(&self.codes, &q.codes);
        for ((d, scale), &entry) in dots.into_iter().zip(&self.scales).zip(&self.owners) {
            let cos = d as f32 * scale * q.scale;
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

/// The integer dot product of `query` with each row of `rows` (rows of
/// `query.len()` codes). With AVX2, checked at run time, the compiler
/// widens the same loop to 256-bit registers; the binary itself stays
/// baseline x86-64.
fn dots(rows: &[i8], query: &[i8]) -> Vec<i32> {
    let mut out = vec![0; rows.len() / query.len().max(1)];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { dots_avx2(rows, query, &mut out) };
        return out;
    }
    dots_into(rows, query, &mut out);
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(rows: &[i8], query: &[i8], out: &mut [i32]) {
    dots_into(rows, query, out);
}

/// A plain loop (no collecting iterator: that would be a call the AVX2
/// copy does not inline).
#[inline(always)]
fn dots_into(rows: &[i8], query: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot(&rows[i * dim..(i + 1) * dim], query);
    }
}

/// Sixteen lanes of 32-bit sums, so the compiler can vectorise it; an
/// 8-bit product summed 384 times cannot overflow 32 bits.
#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
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

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.01)
    }

    #[test]
    fn fusion_rewards_agreement() {
        // 2 is second in both lists: it beats 1 and 3, each first in one.
        assert_eq!(fuse(&[vec![1, 2, 4], vec![3, 2, 5]])[0], 2);
        assert_eq!(fuse(&[vec![7], vec![]]), [7]);
        assert!(fuse(&[]).is_empty());
    }

    #[test]
    fn dense_search_keeps_each_entry_best_phrasing() {
        let v = |x: f32, y: f32| Arc::new(Code::of(&[x, y]));
        let idx = DenseIndex::new(vec![
            (0, v(1.0, 0.0)),
            (0, v(0.0, 1.0)),
            (1, v(0.6, 0.8)),
            (3, v(3.0, 0.0)),
        ]);
        let cos = idx.cosines(&[0.0, 2.0]);
        assert!(
            close(&cos, &[1.0, 0.8, -1.0, 0.0]),
            "{cos:?}: entry 2 has no vector"
        );
        assert_eq!(DenseIndex::ranking(&cos, 5), [0, 1, 3]);
        assert_eq!(DenseIndex::ranking(&cos, 1), [0]);
        assert!(close(&idx.cosines(&[0.0, 0.0]), &[0.0, 0.0, -1.0, 0.0]));
        assert_eq!(idx.cosines(&[1.0]), [-1.0; 4], "wrong dimension");
    }

    #[test]
    fn eight_bit_cosines_match_the_float_ones() {
        // Pseudo-random 384-dimensional vectors, like the model's.
        let mut seed = 7u32;
        let mut vector = || -> Vec<f32> {
            (0..384)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let rows: Vec<Vec<f32>> = (0..50).map(|_| vector()).collect();
        let query = vector();
        let idx = DenseIndex::new(
            rows.iter()
                .enumerate()
                .map(|(i, r)| (i, Arc::new(Code::of(r))))
                .collect(),
        );
        let (q, got) = (unit(&query), idx.cosines(&query));
        for (row, cos) in rows.iter().zip(got) {
            let exact: f32 = unit(row).iter().zip(&q).map(|(a, b)| a * b).sum();
            assert!((exact - cos).abs() < 0.005, "{exact} vs {cos}");
        }
    }

    #[test]
    fn dot_matches_the_plain_sum_and_both_paths_agree() {
        let a: Vec<i8> = (0..21).map(|i| (i * 12 - 127) as i8).collect();
        let b: Vec<i8> = (0..21).map(|i| (127 - i * 11) as i8).collect();
        let plain: i32 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        assert_eq!(dot(&a, &b), plain);
        let rows: Vec<i8> = a.iter().chain(&b).copied().collect();
        let mut plain_rows = vec![0; 2];
        dots_into(&rows, &b, &mut plain_rows);
        assert_eq!(dots(&rows, &b), plain_rows);
        assert_eq!(dots(&rows, &b)[0], plain);
        assert_eq!(dot(&[-128; 384], &[-128; 384]), 384 * 16384);
    }
}
