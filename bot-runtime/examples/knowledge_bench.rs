//! Knowledge retrieval at scale, for `make bench`: builds an index of
//! 10,000 synthetic bilingual FAQ entries and times the build and each
//! search (p50/p99), with the process's resident memory after the build.
//! Prints one JSON object.
//!
//!   cargo run --release -p bot-runtime --example knowledge_bench -- [EMBEDDINGS_GGUF] [ENTRIES]
//!
//! English questions run the whole search (the question's embedding, BM25,
//! the cosine scan, fusion), then again with the embedding and the search
//! given the vector timed apart; Chinese ones the lexical part alone (the
//! embedding model is English-only).

use std::path::Path;
use std::time::Instant;

use bot_runtime::knowledge::KnowledgeBase;
use bot_runtime::knowledge::faq::Entry;

const VERBS: &[&str] = &[
    "install",
    "configure",
    "reset",
    "upgrade",
    "remove",
    "export",
    "connect",
    "restart",
    "enable",
    "rotate",
];
const THINGS: &[&str] = &[
    "password",
    "printer",
    "VPN",
    "mailbox",
    "laptop",
    "badge",
    "invoice",
    "calendar",
    "database",
    "webhook",
    "certificate",
    "phone",
    "account",
    "report",
    "backup",
];
const ZH_VERBS: &[&str] = &[
    "安装", "配置", "重置", "升级", "删除", "导出", "连接", "重启", "启用", "更换",
];
const ZH_THINGS: &[&str] = &[
    "密码",
    "打印机",
    "邮箱",
    "电脑",
    "工牌",
    "发票",
    "日历",
    "数据库",
    "证书",
    "手机",
    "账号",
    "报表",
    "备份",
    "网络",
    "会议室",
];

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let (v, t) = (VERBS[i % VERBS.len()], THINGS[(i / VERBS.len()) % THINGS.len()]);
            let (zv, zt) = (ZH_VERBS[i % ZH_VERBS.len()], ZH_THINGS[(i / ZH_VERBS.len()) % ZH_THINGS.len()]);
            let site = i / (VERBS.len() * THINGS.len());
            Entry {
                id: format!("e{i}"),
                question: format!("How do I {v} the {t} at site {site}?"),
                alternatives: vec![format!("{t} {v} steps for office {site}"), format!("{site}号办公室如何{zv}{zt}")],
                answer: format!("Open the portal of site {site}, choose {t}, then {v}. 在{site}号办公室{zv}{zt}请联系管理员。"),
                tags: vec![t.to_lowercase()],
                source: "bench".into(),
            }
        })
        .collect()
}

/// This process's resident memory now (Linux), in MB.
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The question's embedding and the search given it, timed apart (p50,
/// p99 of each): the first does not depend on the number of entries.
fn timed_parts(kb: &KnowledgeBase, questions: &[String]) -> ((f64, f64), (f64, f64)) {
    let (mut embed, mut search) = (Vec::new(), Vec::new());
    for q in questions {
        let started = Instant::now();
        let vector = kb.embed_question(q);
        embed.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(vector.is_some() || !kb.dense(), "{q}");
        let started = Instant::now();
        let hits = kb.search_embedded(q, vector.as_deref());
        search.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(!hits.is_empty(), "{q}");
    }
    for v in [&mut embed, &mut search] {
        v.sort_by(f64::total_cmp);
    }
    let p = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.99));
    (p(&embed), p(&search))
}

fn timed(kb: &KnowledgeBase, questions: &[String]) -> (f64, f64) {
    let mut ms: Vec<f64> = questions
        .iter()
        .map(|q| {
            let started = Instant::now();
            let hits = kb.search(q);
            assert!(!hits.is_empty(), "{q}");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let embeddings = args.next().filter(|a| !a.is_empty());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let all = entries(n);
    let started = Instant::now();
    let kb = KnowledgeBase::from_entries(all, 3, embeddings.as_deref().map(Path::new));
    let build_s = started.elapsed().as_secs_f64();
    // The index and the embedding model, before any question.
    let rss_after_build_mb = rss_mb();
    // 500 different questions (no two alike), about sites that exist.
    let sites = n.div_ceil(VERBS.len() * THINGS.len()).max(1);
    let en: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "{} steps for the {} in office {}",
                VERBS[i % 10],
                THINGS[(i / 10) % 15],
                i % sites
            )
        })
        .collect();
    let zh: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "{}号办公室的{}怎么{}",
                i % sites,
                ZH_THINGS[(i / 10) % 15],
                ZH_VERBS[i % 10]
            )
        })
        .collect();
    // Warm-up.
    timed(&kb, &en[..20]);
    let (en_p50, en_p99) = timed(&kb, &en);
    let (zh_p50, zh_p99) = timed(&kb, &zh);
    let ((embed_p50, embed_p99), (index_p50, index_p99)) = timed_parts(&kb, &en);
    // The same English questions without the embedding model: what the
    // question's embedding costs is the difference.
    let lexical = KnowledgeBase::from_entries(entries(n), 3, None);
    timed(&lexical, &en[..20]);
    let (lex_p50, lex_p99) = timed(&lexical, &en);
    println!(
        "{}",
        serde_json::json!({
            "entries": n,
            "dense": kb.dense(),
            "build_s": build_s,
            "rss_after_build_mb": rss_after_build_mb,
            "search_en_p50_ms": en_p50,
            "search_en_p99_ms": en_p99,
            "search_zh_p50_ms": zh_p50,
            "search_zh_p99_ms": zh_p99,
            "search_en_lexical_p50_ms": lex_p50,
            "search_en_lexical_p99_ms": lex_p99,
            "embed_question_p50_ms": embed_p50,
            "embed_question_p99_ms": embed_p99,
            "search_en_given_vector_p50_ms": index_p50,
            "search_en_given_vector_p99_ms": index_p99,
        })
    );
}
