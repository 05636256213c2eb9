//! From OpenAI-style messages to a prompt that fits the context window.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// The role and text of each message; array content keeps its text parts.
/// Roles other than system/user/assistant (tool results) are given to the
/// model as user text, which every chat template accepts.
pub fn turns(messages: &[Value]) -> Vec<Turn> {
    messages
        .iter()
        .map(|m| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some(r @ ("system" | "user" | "assistant")) => r.to_owned(),
                Some("developer") => "system".to_owned(),
                _ => "user".to_owned(),
            };
            let content = crate::chat::model::message_text(m);
            Turn { role, content }
        })
        .collect()
}

/// Cuts a conversation until `count` (the prompt's length in tokens once
/// templated) is at most `budget`: first the oldest turns after the system
/// prompt go, always keeping the latest one; then, if the latest turn (or
/// the system prompt) alone is too long, the longest message is shortened.
/// The result may still be over budget only when even empty messages are.
pub fn fit(mut turns: Vec<Turn>, budget: usize, count: impl Fn(&[Turn]) -> usize) -> Vec<Turn> {
    let leading_system = turns.iter().take_while(|t| t.role == "system").count();
    while count(&turns) > budget && turns.len() > leading_system + 1 {
        turns.remove(leading_system);
    }
    // Keep the conversation starting with a user turn after the cut.
    while turns.len() > leading_system + 1 && turns[leading_system].role == "assistant" {
        turns.remove(leading_system);
    }
    while count(&turns) > budget {
        let Some((i, longest)) = turns
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| t.content.len())
            .map(|(i, t)| (i, t.content.chars().count()))
        else {
            break;
        };
        if longest == 0 {
            break;
        }
        // Binary search on characters for the longest part that fits: the
        // end of the latest turn (where the question usually is), the start
        // of any other (a system prompt's instructions come first).
        let keep_end = i + 1 == turns.len();
        let original = turns[i].content.clone();
        let part = |n: usize| -> String {
            if keep_end {
                original.chars().skip(longest - n).collect()
            } else {
                original.chars().take(n).collect()
            }
        };
        let (mut lo, mut hi) = (0usize, longest);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            turns[i].content = part(mid);
            if count(&turns) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        turns[i].content = part(lo);
        if lo == 0 {
            // Emptied and still too long: the next longest goes next.
            continue;
        }
        break;
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(role: &str, content: &str) -> Turn {
        Turn {
            role: role.into(),
            content: content.into(),
        }
    }

    /// One "token" per character plus 3 per message, like a template.
    fn count(turns: &[Turn]) -> usize {
        turns.iter().map(|t| t.content.chars().count() + 3).sum()
    }

    #[test]
    fn reads_roles_and_text_parts() {
        let got = turns(&[
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}),
            json!({"role": "assistant", "content": null}),
            json!({"role": "tool", "content": "42"}),
        ]);
        assert_eq!(
            got,
            [
                t("system", "be brief"),
                t("user", "hi"),
                t("assistant", ""),
                t("user", "42")
            ]
        );
    }

    #[test]
    fn keeps_the_system_prompt_and_the_latest_turns() {
        let conv = vec![
            t("system", "sys"),
            t("user", "one"),
            t("assistant", "two"),
            t("user", "three"),
            t("assistant", "four"),
            t("user", "five"),
        ];
        assert_eq!(fit(conv.clone(), 1000, count), conv, "fits: unchanged");
        // 6 + 8 + 7 + 7 = 28 for sys, three, four, five.
        assert_eq!(
            fit(conv.clone(), 28, count),
            [
                t("system", "sys"),
                t("user", "three"),
                t("assistant", "four"),
                t("user", "five")
            ]
        );
        // Dropping "three" would leave an assistant turn first: it goes too.
        assert_eq!(
            fit(conv, 27, count),
            [t("system", "sys"), t("user", "five")]
        );
    }

    #[test]
    fn a_single_long_message_is_shortened_never_dropped() {
        let long = "x".repeat(500);
        let got = fit(vec![t("system", "sys"), t("user", &long)], 100, count);
        assert_eq!(got[0], t("system", "sys"));
        assert_eq!(count(&got), 100);
        // The latest turn keeps its end, where the question is.
        let asked = format!("{}Where is Paris?", "x".repeat(500));
        let got = fit(vec![t("system", "sys"), t("user", &asked)], 100, count);
        assert!(
            got[1].content.ends_with("Where is Paris?"),
            "{:?}",
            got[1].content
        );
        // Any other message keeps its start.
        let got = fit(
            vec![
                t("system", &format!("Rules first. {long}")),
                t("user", "hi"),
            ],
            100,
            count,
        );
        assert!(
            got[0].content.starts_with("Rules first."),
            "{:?}",
            got[0].content
        );
        // Multi-byte text is cut on character boundaries.
        let got = fit(vec![t("user", &"中".repeat(50))], 13, count);
        assert_eq!(got, [t("user", &"中".repeat(10))]);
    }
}
