//! The layout's promises, checked on the source: the top-level modules
//! depend on each other without a cycle, the chat engine never sees the
//! app state, and an IM platform's folder never reaches into another's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that wire everything together and may depend on anything.
const ROOTS: [&str; 2] = ["lib", "main"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `im/dingtalk/reply.rs` is
/// `["im", "dingtalk", "reply"]`, `im/mod.rs` is `["im"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path a file names, as `[a, b]` (comments included:
/// a doc link is a dependency a reader follows too).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue; // `bot_runtime::crate::` never, but `my_crate::` yes
        }
        let rest = &text[i + "crate::".len()..];
        let path: Vec<String> = rest
            .split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .take(2)
            .collect();
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

struct Source {
    module: Vec<String>,
    paths: Vec<Vec<String>>,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 40, "found only {} files", files.len());
    files
        .iter()
        .map(|f| Source {
            module: module_of(&src, f),
            paths: crate_paths(&std::fs::read_to_string(f).unwrap()),
        })
        .collect()
}

/// Top-level module -> the top-level modules it names.
fn top_level_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let from = &s.module[0];
        if ROOTS.contains(&from.as_str()) {
            continue;
        }
        let deps = graph.entry(from.clone()).or_default();
        for p in &s.paths {
            if &p[0] != from {
                deps.insert(p[0].clone());
            }
        }
    }
    graph
}

/// A cycle through the graph, if there is one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_have_no_cycle() {
    let graph = top_level_graph(&sources());
    for expected in [
        "chat",
        "convlog",
        "deliveries",
        "http",
        "im",
        "routes",
        "state",
    ] {
        assert!(graph.contains_key(expected), "no module {expected}");
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module cycle: {}\nthe graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn only_the_wiring_sees_the_app_state() {
    // The state is for handlers: features take the narrow things they use.
    for s in sources() {
        let top = s.module[0].as_str();
        if ROOTS.contains(&top) || top == "state" || top == "routes" {
            continue;
        }
        assert!(
            !s.paths.iter().any(|p| p[0] == "state"),
            "{} uses the app state",
            s.module.join("::")
        );
    }
}

#[test]
fn a_platform_folder_keeps_to_itself() {
    const PLATFORMS: [&str; 4] = ["dingtalk", "feishu", "wecom", "slack"];
    for s in sources() {
        let [top, own, ..] = s.module.as_slice() else {
            continue;
        };
        if top != "im" || !PLATFORMS.contains(&own.as_str()) {
            continue;
        }
        for p in &s.paths {
            if p[0] == "im"
                && let Some(other) = p.get(1)
                && PLATFORMS.contains(&other.as_str())
            {
                assert_eq!(other, own, "{} uses im::{other}", s.module.join("::"));
            }
            // Protocol code does not reach the delivery store or the routes.
            assert!(
                !["deliveries", "routes", "state"].contains(&p[0].as_str()),
                "{} uses crate::{}",
                s.module.join("::"),
                p[0]
            );
        }
    }
}
