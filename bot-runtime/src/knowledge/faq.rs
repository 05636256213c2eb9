//! FAQ files: what a knowledge folder holds, parsed into entries. Pure:
//! text in, entries and problems (with file and line) out.
//!
//! YAML (`.yaml`/`.yml`): a list of entries, or a map with `entries:`:
//!
//! ```yaml
//! - id: install-helm
//!   question: How do I install ClawdBot with Helm?
//!   alternatives: ["helm install clawdbot", "用 Helm 安装"]
//!   answer: |
//!     Run `helm install ...`
//!   tags: [install]
//! ```
//!
//! Markdown (`.md`): one entry per `## ` heading (the question); the lines
//! right below it may set `id:`, `alt:` (repeatable) and `tags:`; the rest,
//! up to the next `## `, is the answer, in Markdown.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable id, cited with the answer: given, or made from the file name
    /// and the entry's position.
    pub id: String,
    pub question: String,
    pub alternatives: Vec<String>,
    pub answer: String,
    pub tags: Vec<String>,
    /// `file:line` where the entry starts.
    pub source: String,
}

impl Entry {
    /// The question and every alternative phrasing.
    pub fn phrasings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.question.as_str()).chain(self.alternatives.iter().map(String::as_str))
    }
}

/// A file or entry that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Parses one file by its extension; other extensions hold no entries.
pub fn parse(file: &str, text: &str) -> (Vec<Entry>, Vec<Problem>) {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".md") || lower.ends_with(".markdown") {
        parse_markdown(file, text)
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        parse_yaml(file, text)
    } else {
        (Vec::new(), Vec::new())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlEntry {
    #[serde(default)]
    id: Option<String>,
    question: String,
    #[serde(default)]
    alternatives: Vec<String>,
    answer: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum YamlFile {
    List(Vec<YamlEntry>),
    Map { entries: Vec<YamlEntry> },
}

fn parse_yaml(file: &str, text: &str) -> (Vec<Entry>, Vec<Problem>) {
    if text.trim().is_empty() {
        return (Vec::new(), Vec::new());
    }
    // A file that does not parse is skipped whole, with the parser's line.
    let parsed: YamlFile = match serde_saphyr::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            let line = line_of(&message).unwrap_or(1);
            return (
                Vec::new(),
                vec![Problem {
                    file: file.to_owned(),
                    line,
                    message: format!(
                        "not a list of FAQ entries (question, answer, alternatives, tags, id): {message}"
                    ),
                }],
            );
        }
    };
    let raw = match parsed {
        YamlFile::List(l) | YamlFile::Map { entries: l } => l,
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, e) in raw.into_iter().enumerate() {
        let line = entry_line(text, &e.question).unwrap_or(1);
        let draft = Entry {
            id: e.id.unwrap_or_else(|| default_id(file, i)),
            question: e.question.trim().to_owned(),
            alternatives: e
                .alternatives
                .into_iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            answer: e.answer.trim().to_owned(),
            tags: e.tags,
            source: format!("{file}:{line}"),
        };
        match check(draft) {
            Ok(entry) => entries.push(entry),
            Err(message) => problems.push(Problem {
                file: file.to_owned(),
                line,
                message,
            }),
        }
    }
    (entries, problems)
}

fn parse_markdown(file: &str, text: &str) -> (Vec<Entry>, Vec<Problem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("## "))
        .map(|(i, _)| i)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let mut draft = Entry {
            id: default_id(file, n),
            question: lines[start][3..].trim().to_owned(),
            alternatives: Vec::new(),
            answer: String::new(),
            tags: Vec::new(),
            source: format!("{file}:{}", start + 1),
        };
        let mut body = start + 1;
        while body < end {
            let line = lines[body].trim();
            if let Some(v) = line.strip_prefix("id:") {
                draft.id = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("alt:") {
                draft.alternatives.push(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("tags:") {
                draft.tags = v
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
            } else {
                break;
            }
            body += 1;
        }
        draft.answer = lines[body..end].join("\n").trim().to_owned();
        match check(draft) {
            Ok(entry) => entries.push(entry),
            Err(message) => problems.push(Problem {
                file: file.to_owned(),
                line: start + 1,
                message,
            }),
        }
    }
    (entries, problems)
}

fn check(e: Entry) -> Result<Entry, String> {
    if e.question.is_empty() {
        return Err("an entry has no question".into());
    }
    if e.answer.is_empty() {
        return Err(format!("entry {:?} has no answer", e.question));
    }
    if e.id.trim().is_empty() || e.id.chars().any(char::is_whitespace) {
        return Err(format!(
            "entry {:?}: id {:?} must be one word",
            e.question, e.id
        ));
    }
    Ok(e)
}

/// `faq/install.md`, third entry: `install-3`.
fn default_id(file: &str, index: usize) -> String {
    let stem = std::path::Path::new(file)
        .file_stem()
        .map_or_else(|| "faq".into(), |s| s.to_string_lossy().into_owned());
    format!("{stem}-{}", index + 1)
}

fn line_of(message: &str) -> Option<usize> {
    let at = message.find("line ")? + 5;
    message[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn entry_line(text: &str, question: &str) -> Option<usize> {
    let first = question.lines().next()?.trim();
    text.lines().position(|l| l.contains(first)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_entries_with_metadata_lines() {
        let md = "# ClawdBot FAQ\n\nintro text\n\n## How do I install it?\nid: install\nalt: installation steps\nalt: 怎么安装\ntags: install, helm\n\nRun:\n\n- `make run`\n- open the page\n\n## 机器人不回复怎么办？\n\n检查 `/health`。\n\n## Empty one\n";
        let (entries, problems) = parse("faq/basics.md", md);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let e = &entries[0];
        assert_eq!(
            (e.id.as_str(), e.question.as_str()),
            ("install", "How do I install it?")
        );
        assert_eq!(e.alternatives, ["installation steps", "怎么安装"]);
        assert_eq!(e.tags, ["install", "helm"]);
        assert_eq!(e.answer, "Run:\n\n- `make run`\n- open the page");
        assert_eq!(e.source, "faq/basics.md:5");
        assert_eq!(entries[1].id, "basics-2");
        assert_eq!(entries[1].answer, "检查 `/health`。");
        assert_eq!(
            problems,
            [Problem {
                file: "faq/basics.md".into(),
                line: 20,
                message: "entry \"Empty one\" has no answer".into()
            }]
        );
    }

    #[test]
    fn yaml_list_or_entries_map() {
        let y = "- id: a\n  question: What is ClawdBot?\n  alternatives: [what is this bot]\n  answer: A chat bot.\n  tags: [about]\n- question: Second?\n  answer: Yes.\n";
        let (entries, problems) = parse("k/about.yaml", y);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries[0].id, "a");
        assert_eq!(entries[0].alternatives, ["what is this bot"]);
        assert_eq!(entries[1].id, "about-2");
        assert_eq!(entries[1].source, "k/about.yaml:6");
        let (entries, _) = parse("k/x.yml", "entries:\n  - question: Q?\n    answer: A.\n");
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_malformed_yaml_file_is_one_problem_with_its_line() {
        let (entries, problems) = parse(
            "k/bad.yaml",
            "- question: fine\n  answer: ok\n- question: [unclosed\n  answer: x\n",
        );
        assert!(entries.is_empty());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, "k/bad.yaml");
        assert!(problems[0].line >= 3, "{}", problems[0]);
        let (_, problems) = parse("k/typo.yaml", "- question: Q\n  answr: A\n");
        assert!(
            problems[0].message.contains("answr") || problems[0].message.contains("answer"),
            "{}",
            problems[0]
        );
        // Other files: ignored.
        assert_eq!(parse("k/readme.txt", "anything"), (vec![], vec![]));
    }
}
