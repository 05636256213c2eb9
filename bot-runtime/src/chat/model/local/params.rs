//! Generation settings read from an OpenAI-style request body.

use serde_json::{Map, Value};

/// When neither the caller nor `model.temperature` sets one. Small models
/// wander at higher temperatures.
pub const DEFAULT_TEMPERATURE: f32 = 0.3;
/// When neither the caller nor `model.max_tokens` sets a limit.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// OpenAI's own limit on `stop`.
const MAX_STOPS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub stop: Vec<String>,
    pub seed: Option<u32>,
}

/// A request field the local model cannot honour: `(param, message)`.
pub type BadParam = (&'static str, String);

impl GenParams {
    pub fn from_request(extra: &Map<String, Value>) -> Result<Self, BadParam> {
        let number = |key: &'static str| -> Result<Option<f64>, BadParam> {
            match extra.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or((key, format!("`{key}` must be a number"))),
            }
        };
        let max_tokens = match number("max_completion_tokens")?.or(number("max_tokens")?) {
            None => DEFAULT_MAX_TOKENS,
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => n as u32,
            Some(_) => {
                return Err((
                    "max_tokens",
                    "`max_tokens` must be a whole number of at least 1".into(),
                ));
            }
        };
        let temperature = match number("temperature")? {
            None => DEFAULT_TEMPERATURE,
            Some(t) if (0.0..=2.0).contains(&t) => t as f32,
            Some(_) => {
                return Err((
                    "temperature",
                    "`temperature` must be between 0 and 2".into(),
                ));
            }
        };
        let top_p = match number("top_p")? {
            None => 1.0,
            Some(p) if p > 0.0 && p <= 1.0 => p as f32,
            Some(_) => return Err(("top_p", "`top_p` must be above 0 and at most 1".into())),
        };
        let seed = match number("seed")? {
            None => None,
            // Any integer is accepted, as upstreams do; llama.cpp takes 32 bits.
            Some(s) if s.fract() == 0.0 => Some((s as i64) as u32),
            Some(_) => return Err(("seed", "`seed` must be an integer".into())),
        };
        match extra.get("n").and_then(Value::as_u64) {
            None | Some(1) => {}
            Some(_) => {
                return Err((
                    "n",
                    "the local model answers with one choice: `n` must be 1".into(),
                ));
            }
        }
        Ok(Self {
            max_tokens,
            temperature,
            top_p,
            stop: stops(extra.get("stop"))?,
            seed,
        })
    }
}

fn stops(v: Option<&Value>) -> Result<Vec<String>, BadParam> {
    let bad = || {
        (
            "stop",
            format!("`stop` must be a string or an array of up to {MAX_STOPS} strings"),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.len() <= MAX_STOPS => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<GenParams, BadParam> {
        GenParams::from_request(v.as_object().expect("object"))
    }

    #[test]
    fn defaults_and_fields() {
        let p = parse(json!({})).unwrap();
        assert_eq!(
            (p.max_tokens, p.temperature, p.top_p),
            (DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, 1.0)
        );
        let p = parse(
            json!({"max_tokens": 7, "temperature": 0, "top_p": 0.5, "stop": "\n", "seed": 42}),
        )
        .unwrap();
        assert_eq!(
            p,
            GenParams {
                max_tokens: 7,
                temperature: 0.0,
                top_p: 0.5,
                stop: vec!["\n".into()],
                seed: Some(42)
            }
        );
        // The newer name wins over the old one.
        assert_eq!(
            parse(json!({"max_tokens": 7, "max_completion_tokens": 9}))
                .unwrap()
                .max_tokens,
            9
        );
        assert_eq!(parse(json!({"stop": ["a", "b"]})).unwrap().stop, ["a", "b"]);
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, param) in [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"max_tokens": "9"}), "max_tokens"),
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"stop": 5}), "stop"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": ["a", 1]}), "stop"),
            (json!({"seed": 0.5}), "seed"),
            (json!({"n": 2}), "n"),
        ] {
            assert_eq!(parse(body.clone()).unwrap_err().0, param, "{body}");
        }
    }
}
