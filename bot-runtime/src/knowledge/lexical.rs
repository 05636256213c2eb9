//! Lexical retrieval: words from Chinese (jieba's segmentation) and English
//! (Snowball stems) text, ranked by BM25, plus a coverage score in [0, 1]
//! that says how much of a question an entry's phrasings answer (the BM25
//! score itself has no fixed scale to set a threshold on).
//!
//! The crate `bm25` weighs each term of each entry (term-frequency
//! saturation, length normalisation); the ranking is the sparse dot product
//! of those weights with the question's terms' IDF over an inverted index,
//! so a search touches only the postings of the question's terms. (The
//! crate's own `SearchEngine` rescans every matching entry's whole term list
//! per question term: 7 ms at 10,000 entries, docs/benchmarks.md.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use bm25::{Embedder, EmbedderBuilder};
use jieba_rs::Jieba;
use rust_stemmers::{Algorithm, Stemmer};

use super::faq::Entry;

/// Splits text into search terms: jieba's search-mode words for Chinese
/// (finer pieces of long words too), lower-case English stems; stop words
/// and punctuation dropped.
#[derive(Clone)]
pub struct Terms {
    /// jieba's dictionary takes about 50 MB: loaded on first use, so a
    /// runtime without a knowledge base never pays for it.
    jieba: Arc<OnceLock<Jieba>>,
}

fn stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

fn stop_words() -> &'static HashSet<&'static str> {
    static STOP: OnceLock<HashSet<&'static str>> = OnceLock::new();
    STOP.get_or_init(|| {
        stop_words::get("en")
            .iter()
            .chain(stop_words::get("zh"))
            .copied()
            .collect()
    })
}

impl Terms {
    pub fn new() -> Self {
        Self {
            jieba: Arc::new(OnceLock::new()),
        }
    }

    pub fn of(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        self.jieba
            .get_or_init(Jieba::new)
            .cut_for_search(&lower, true)
            .into_iter()
            .filter_map(|t| {
                let w = t.word.trim();
                if w.is_empty() || !w.chars().any(char::is_alphanumeric) || stop_words().contains(w)
                {
                    return None;
                }
                Some(if w.is_ascii() {
                    stemmer().stem(w).into_owned()
                } else {
                    w.to_owned()
                })
            })
            .collect()
    }
}

impl Default for Terms {
    fn default() -> Self {
        Self::new()
    }
}

impl bm25::Tokenizer for Terms {
    fn tokenize(&self, input_text: &str) -> Vec<String> {
        self.of(input_text)
    }
}

pub struct LexicalIndex {
    weights: Embedder<u32, Terms>,
    /// Per term (as the `bm25` crate hashes it): the entries that hold it,
    /// each with the term's BM25 weight there.
    postings: HashMap<u32, Vec<(u32, f32)>>,
    terms: Terms,
    /// Per entry: the terms of its question, alternatives and tags.
    phrasing_terms: Vec<HashSet<String>>,
    /// Entries whose phrasings or answer hold each term.
    doc_freq: HashMap<String, usize>,
    entries: usize,
}

impl LexicalIndex {
    pub fn build(entries: &[Entry], terms: &Terms) -> Self {
        let docs: Vec<String> = entries
            .iter()
            .map(|e| {
                // Phrasings twice: a match on the question counts more than
                // one in the answer.
                let phrasings = e.phrasings().collect::<Vec<_>>().join("\n");
                format!(
                    "{phrasings}\n{phrasings}\n{}\n{}",
                    e.tags.join(" "),
                    e.answer
                )
            })
            .collect();
        let corpus: Vec<&str> = docs.iter().map(String::as_str).collect();
        let weights =
            EmbedderBuilder::<u32, Terms>::with_tokenizer_and_fit_to_corpus(terms.clone(), &corpus)
                .build();
        let mut postings: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
        for (i, doc) in docs.iter().enumerate() {
            // A repeated term appears once per occurrence, with one weight.
            let mut seen = HashSet::new();
            for t in weights.embed(doc).iter().filter(|t| seen.insert(t.index)) {
                postings
                    .entry(t.index)
                    .or_default()
                    .push((i as u32, t.value));
            }
        }
        let mut doc_freq: HashMap<String, usize> = HashMap::new();
        let mut phrasing_terms = Vec::with_capacity(entries.len());
        for e in entries {
            let mut own: HashSet<String> = e.phrasings().flat_map(|p| terms.of(p)).collect();
            own.extend(e.tags.iter().flat_map(|t| terms.of(t)));
            let all: HashSet<String> = own.iter().cloned().chain(terms.of(&e.answer)).collect();
            for t in all {
                *doc_freq.entry(t).or_default() += 1;
            }
            phrasing_terms.push(own);
        }
        Self {
            weights,
            postings,
            terms: terms.clone(),
            phrasing_terms,
            doc_freq,
            entries: entries.len(),
        }
    }

    /// Entry indices, best first, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Vec<usize> {
        let n = self.entries as f32;
        let mut score = vec![0.0f32; self.entries];
        let mut seen = HashSet::new();
        for t in self.weights.embed(query).iter() {
            let Some(list) = self.postings.get(&t.index).filter(|_| seen.insert(t.index)) else {
                continue;
            };
            let idf = idf(n, list.len() as f32);
            for &(entry, weight) in list {
                score[entry as usize] += idf * weight;
            }
        }
        super::best(&score, 0.0, limit)
    }

    /// How much of the query the entry's phrasings cover, weighting each
    /// query term by its rarity (IDF): 1.0 when every term appears, less
    /// for each missing one, most for rare ones (a term no entry has counts
    /// as rarest).
    #[cfg(test)]
    pub fn coverage(&self, query: &str, entry: usize) -> f32 {
        self.coverage_of(&self.query_terms(query), entry)
    }

    /// The distinct terms of a question, for `coverage_of`.
    pub fn query_terms(&self, query: &str) -> HashSet<String> {
        self.terms.of(query).into_iter().collect()
    }

    /// `coverage` with the question's terms computed once for many entries.
    pub fn coverage_of(&self, q: &HashSet<String>, entry: usize) -> f32 {
        let Some(own) = self.phrasing_terms.get(entry) else {
            return 0.0;
        };
        let (mut hit, mut total) = (0.0f32, 0.0f32);
        for t in q {
            let df = self.doc_freq.get(t).copied().unwrap_or(0) as f32;
            let w = idf(self.entries as f32, df);
            total += w;
            if own.contains(t) {
                hit += w;
            }
        }
        if total == 0.0 { 0.0 } else { hit / total }
    }
}

/// BM25's inverse document frequency of a term held by `df` of `n` entries.
fn idf(n: f32, df: f32) -> f32 {
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(q: &str, alts: &[&str], a: &str) -> Entry {
        Entry {
            id: q.into(),
            question: q.into(),
            alternatives: alts.iter().map(|s| (*s).to_owned()).collect(),
            answer: a.into(),
            tags: vec![],
            source: "t".into(),
        }
    }

    #[test]
    fn chinese_is_segmented_and_english_stemmed() {
        let t = Terms::new();
        assert_eq!(t.of("Installing the bots"), ["instal", "bot"]);
        let zh = t.of("如何安装机器人？");
        assert!(
            zh.contains(&"安装".to_owned()) && zh.contains(&"机器人".to_owned()),
            "{zh:?}"
        );
        assert!(!zh.iter().any(|w| w == "？"), "{zh:?}");
    }

    #[test]
    fn ranks_and_covers() {
        let t = Terms::new();
        let entries = vec![
            entry(
                "How do I install ClawdBot?",
                &["installation steps"],
                "Run make run.",
            ),
            entry(
                "机器人不回复怎么办？",
                &["机器人没有反应"],
                "检查健康状态。",
            ),
            entry(
                "Which IM platforms are supported?",
                &[],
                "DingTalk, Feishu, WeCom and Slack.",
            ),
        ];
        let idx = LexicalIndex::build(&entries, &t);
        assert_eq!(idx.search("how to install clawdbot", 3)[0], 0);
        assert_eq!(idx.search("机器人为什么不回复", 3)[0], 1);
        assert_eq!(idx.search("does it support slack", 3)[0], 2);
        assert!(idx.coverage("How do I install ClawdBot?", 0) > 0.99);
        // An unknown word lowers coverage: not the same question.
        assert!(
            idx.coverage("How do I install Kafka?", 0) < 0.6,
            "{}",
            idx.coverage("How do I install Kafka?", 0)
        );
        assert_eq!(idx.coverage("", 0), 0.0);
    }
}
