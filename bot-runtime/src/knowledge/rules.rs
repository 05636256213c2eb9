//! Dialog rules: fixed replies to fixed phrases or patterns, checked before
//! the FAQ and the model, so an operator can pin an answer (a greeting,
//! the hand-off to a human, business hours) with no model at all.

use clawdbot_config::DialogConfig;
use regex::Regex;

struct Rule {
    name: String,
    exact: Vec<String>,
    regex: Option<Regex>,
    reply: String,
}

pub struct Rules(Vec<Rule>);

/// The rule that matched and its reply.
pub struct Matched<'a> {
    pub name: &'a str,
    pub reply: &'a str,
}

impl Rules {
    /// Regexes were checked when the config was validated; one that still
    /// does not compile is skipped with a log line.
    pub fn from_config(cfg: &DialogConfig) -> Self {
        let rules = cfg
            .rules
            .iter()
            .filter_map(|r| {
                let regex = match r.regex.as_deref().map(Regex::new).transpose() {
                    Ok(re) => re,
                    Err(e) => {
                        tracing::error!(rule = %r.name, error = %e, "dialog rule skipped: bad regex");
                        return None;
                    }
                };
                Some(Rule {
                    name: r.name.clone(),
                    exact: r.exact.iter().map(|p| normalize(p)).collect(),
                    regex,
                    reply: r.reply.clone(),
                })
            })
            .collect();
        Self(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn find(&self, message: &str) -> Option<Matched<'_>> {
        let norm = normalize(message);
        self.0
            .iter()
            .find(|r| {
                r.exact.contains(&norm) || r.regex.as_ref().is_some_and(|re| re.is_match(message))
            })
            .map(|r| Matched {
                name: &r.name,
                reply: &r.reply,
            })
    }
}

/// Lower case, no surrounding spaces or trailing punctuation (ASCII or
/// full-width): "转人工！" and "转人工" are the same phrase.
fn normalize(s: &str) -> String {
    s.trim()
        .trim_end_matches(|c: char| {
            c.is_ascii_punctuation() || "！？。，、；：～…".contains(c) || c.is_whitespace()
        })
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdbot_config::DialogRule;

    fn rules() -> Rules {
        Rules::from_config(&DialogConfig {
            rules: vec![
                DialogRule {
                    name: "human".into(),
                    exact: vec!["转人工".into(), "Talk to a human".into()],
                    regex: None,
                    reply: "Connecting you.".into(),
                },
                DialogRule {
                    name: "hours".into(),
                    exact: vec![],
                    regex: Some("(?i)business hours|营业时间".into()),
                    reply: "9-18".into(),
                },
            ],
        })
    }

    #[test]
    fn exact_ignores_case_spaces_and_trailing_punctuation() {
        let r = rules();
        for m in ["转人工", " 转人工！", "talk to a human?", "TALK TO A HUMAN"] {
            assert_eq!(r.find(m).map(|m| m.name), Some("human"), "{m}");
        }
        assert!(
            r.find("我不想转人工").is_none(),
            "exact means the whole message"
        );
    }

    #[test]
    fn regex_searches_the_message() {
        let r = rules();
        assert_eq!(
            r.find("What are your Business Hours?").unwrap().reply,
            "9-18"
        );
        assert_eq!(r.find("请问营业时间是？").unwrap().name, "hours");
        assert!(r.find("hello").is_none());
    }
}
