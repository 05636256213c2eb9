//! The knowledge base: FAQ entries from a folder, indexed for retrieval
//! (BM25 over jieba words and English stems), reloaded when the files
//! change, and the `Guide` that answers from it (and from dialog rules)
//! before or together with the model.

mod dense;
pub mod faq;
pub mod guide;
mod lexical;
pub mod rules;
mod vectors;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clawdbot_config::KnowledgeConfig;
use tokio_util::sync::CancellationToken;

use self::dense::Embedder;
use self::faq::{Entry, Problem};
use self::lexical::{LexicalIndex, Terms};
use self::vectors::DenseIndex;

/// One entry found for a question, with how sure the match is (0..1).
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Arc<Entry>,
    pub confidence: f32,
}

/// What one load of the folder produced.
pub struct Index {
    entries: Vec<Arc<Entry>>,
    lexical: LexicalIndex,
    /// None without the embedding model.
    dense: Option<DenseIndex>,
    fingerprint: u64,
    pub files: usize,
    pub problems: Vec<Problem>,
}

impl Index {
    fn empty(terms: &Terms) -> Self {
        Self {
            entries: Vec::new(),
            lexical: LexicalIndex::build(&[], terms),
            dense: None,
            fingerprint: 0,
            files: 0,
            problems: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub struct KnowledgeBase {
    folder: Option<PathBuf>,
    terms: Terms,
    embedder: Option<Embedder>,
    index: RwLock<Arc<Index>>,
    limit: usize,
}

impl KnowledgeBase {
    /// Loads the folder (when one is configured). Files that do not parse
    /// are skipped with a log line naming the file and line; a folder that
    /// cannot be read leaves the base empty until it can.
    pub fn load(cfg: &KnowledgeConfig) -> Self {
        let terms = Terms::new();
        let folder = cfg.path.as_ref().map(PathBuf::from);
        // The embedding model only when there is something to search.
        let embedder = folder
            .as_ref()
            .and_then(|_| load_embedder(Path::new(&cfg.embeddings_path)));
        let index = match &folder {
            Some(dir) => build(dir, &terms, embedder.as_ref()),
            None => Index::empty(&terms),
        };
        Self {
            folder,
            terms,
            embedder,
            index: RwLock::new(Arc::new(index)),
            limit: cfg.context_entries,
        }
    }

    /// The base over given entries (tests and benchmarks), with dense
    /// retrieval when `embeddings` holds the model.
    pub fn from_entries(entries: Vec<Entry>, limit: usize, embeddings: Option<&Path>) -> Self {
        let terms = Terms::new();
        let embedder = embeddings.and_then(load_embedder);
        let index = index_of(entries, &terms, embedder.as_ref(), 0, 0, Vec::new());
        Self {
            folder: None,
            terms,
            embedder,
            index: RwLock::new(Arc::new(index)),
            limit,
        }
    }

    /// Whether dense retrieval is on.
    pub fn dense(&self) -> bool {
        self.embedder.is_some()
    }

    pub fn index(&self) -> Arc<Index> {
        self.index
            .read()
            .map_or_else(|p| p.into_inner().clone(), |i| i.clone())
    }

    pub fn folder(&self) -> Option<&Path> {
        self.folder.as_deref()
    }

    /// The best entries for `question`, best first, at most
    /// `knowledge.context_entries`: the BM25 and the embedding rankings
    /// fused (reciprocal rank fusion). An entry's confidence is the larger
    /// of how much of the question its phrasings cover and the cosine of
    /// its closest phrasing. Blocking: embeds the question.
    pub fn search(&self, question: &str) -> Vec<Hit> {
        self.search_embedded(question, self.embed_question(question).as_deref())
    }

    /// The question's sentence vector, when there is an embedding model,
    /// the index has vectors and the question is not Chinese: all-MiniLM-L6-v2
    /// knows English; Chinese text is mostly unknown word pieces to it, and
    /// such texts all look alike (cosines of 0.7-0.8 between unrelated
    /// questions), so Chinese is matched by words alone. Blocking.
    pub fn embed_question(&self, question: &str) -> Option<Vec<f32>> {
        let index = self.index();
        match (&self.embedder, &index.dense) {
            _ if has_cjk(question) || question.trim().is_empty() => None,
            (Some(e), Some(_)) => e
                .embed_query(question)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "question not embedded; lexical search only"),
                )
                .ok(),
            _ => None,
        }
    }

    /// `search` with the question's vector already computed (or none:
    /// lexical only).
    pub fn search_embedded(&self, question: &str, query: Option<&[f32]>) -> Vec<Hit> {
        const POOL: usize = 50;
        let index = self.index();
        if index.is_empty() || question.trim().is_empty() {
            return Vec::new();
        }
        let lexical = index.lexical.search(question, POOL);
        let cosines = match (query, &index.dense) {
            (Some(q), Some(dense)) => Some(dense.cosines(q)),
            _ => None,
        };
        let ranked = match &cosines {
            Some(cos) => vectors::fuse(&[lexical, DenseIndex::ranking(cos, POOL)]),
            None => lexical,
        };
        let terms = index.lexical.query_terms(question);
        ranked
            .into_iter()
            .take(self.limit)
            .map(|i| {
                let cosine = cosines.as_ref().map_or(0.0, |c| c[i].max(0.0));
                Hit {
                    entry: index.entries[i].clone(),
                    confidence: index.lexical.coverage_of(&terms, i).max(cosine),
                }
            })
            .collect()
    }

    /// Re-reads the folder when its files changed; true when it did.
    pub fn reload(&self) -> bool {
        let Some(dir) = &self.folder else {
            return false;
        };
        let current = self.index().fingerprint;
        match fingerprint(dir) {
            Ok(f) if f == current => false,
            Ok(_) => {
                let started = Instant::now();
                let index = build(dir, &self.terms, self.embedder.as_ref());
                tracing::info!(
                    path = %dir.display(),
                    entries = index.len(),
                    skipped = index.problems.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "knowledge base reloaded"
                );
                if let Ok(mut slot) = self.index.write() {
                    *slot = Arc::new(index);
                }
                true
            }
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "knowledge folder unreadable; keeping the last index");
                false
            }
        }
    }

    /// Checks the folder every `every` until `stop`, rebuilding the index
    /// off the async workers when a file changed (a ConfigMap update swaps
    /// the mounted files in place).
    pub fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        if self.folder.is_none() || every.is_zero() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let kb = self.clone();
                let _ = tokio::task::spawn_blocking(move || kb.reload()).await;
            }
        });
    }
}

/// The FAQ files under `dir`, sorted; names starting with a dot (a
/// ConfigMap mount's `..data` links and editors' temporaries) are skipped.
fn faq_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d)? {
            let path = item?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| matches!(e.to_str(), Some("md" | "markdown" | "yaml" | "yml")))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Changes when any FAQ file's name or content changes.
fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    let mut h = DefaultHasher::new();
    for path in faq_files(dir)? {
        path.hash(&mut h);
        std::fs::read(&path)?.hash(&mut h);
    }
    Ok(h.finish())
}

fn build(dir: &Path, terms: &Terms, embedder: Option<&Embedder>) -> Index {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let files = match faq_files(dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %dir.display(), error = %e, "knowledge folder unreadable");
            return Index::empty(terms);
        }
    };
    let mut h = DefaultHasher::new();
    for path in &files {
        let shown = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem {
                    file: shown,
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        path.hash(&mut h);
        bytes.hash(&mut h);
        let Ok(text) = String::from_utf8(bytes) else {
            problems.push(Problem {
                file: shown,
                line: 0,
                message: "not UTF-8 text".into(),
            });
            continue;
        };
        let (found, trouble) = faq::parse(&shown, &text);
        entries.extend(found);
        problems.extend(trouble);
    }
    for p in &problems {
        tracing::warn!(file = %p.file, line = p.line, problem = %p.message, "FAQ entry skipped");
    }
    let mut seen = std::collections::HashSet::new();
    entries.retain(|e: &Entry| {
        let fresh = seen.insert(e.id.clone());
        if !fresh {
            tracing::warn!(id = %e.id, source = %e.source, "FAQ entry skipped: its id is taken by an earlier entry");
        }
        fresh
    });
    index_of(entries, terms, embedder, h.finish(), files.len(), problems)
}

fn index_of(
    entries: Vec<Entry>,
    terms: &Terms,
    embedder: Option<&Embedder>,
    fingerprint: u64,
    files: usize,
    problems: Vec<Problem>,
) -> Index {
    let lexical = LexicalIndex::build(&entries, terms);
    let dense = embedder.and_then(|e| {
        let rows: Vec<(usize, &str)> = entries
            .iter()
            .enumerate()
            .flat_map(|(i, entry)| entry.phrasings().map(move |p| (i, p)))
            .filter(|(_, p)| !has_cjk(p))
            .collect();
        let texts: Vec<&str> = rows.iter().map(|(_, p)| *p).collect();
        e.retain(&texts);
        match e.embed(&texts) {
            Ok(vectors) => Some(DenseIndex::new(
                rows.iter().map(|(i, _)| *i).zip(vectors).collect(),
            )),
            Err(err) => {
                tracing::error!(error = %err, "FAQ phrasings not embedded; lexical search only");
                None
            }
        }
    });
    Index {
        entries: entries.into_iter().map(Arc::new).collect(),
        lexical,
        dense,
        fingerprint,
        files,
        problems,
    }
}

/// The indices of the `limit` highest scores above `floor`, best first
/// (ties: lower index first), without sorting all of them.
fn best(scores: &[f32], floor: f32, limit: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&e| scores[e] > floor).collect();
    let by = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if order.len() > limit {
        order.select_nth_unstable_by(limit, by);
        order.truncate(limit);
    }
    order.sort_by(by);
    order
}

/// Whether `text` holds CJK ideographs (the embedding model does not
/// know them).
pub fn has_cjk(text: &str) -> bool {
    text.chars().any(|c| matches!(c, '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{f900}'..='\u{faff}'))
}

/// The embedding model, or None (lexical search only) with the reason
/// logged.
fn load_embedder(file: &Path) -> Option<Embedder> {
    if !file.is_file() {
        tracing::info!(path = %file.display(), "no embedding model there; FAQ search is lexical only");
        return None;
    }
    let started = Instant::now();
    match Embedder::load(file) {
        Ok(e) => {
            tracing::info!(path = %file.display(), ms = started.elapsed().as_millis() as u64, "embedding model loaded");
            Some(e)
        }
        Err(why) => {
            tracing::warn!(reason = %why, "embedding model unusable; FAQ search is lexical only");
            None
        }
    }
}
