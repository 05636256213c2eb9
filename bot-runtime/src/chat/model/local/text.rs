//! Turning generated tokens into the text a client sees: bytes to UTF-8
//! across token boundaries, and stop sequences that may span tokens.

/// Collects token bytes and hands out the longest valid UTF-8 prefix; an
/// incomplete character at the end waits for the next token, an invalid
/// byte becomes U+FFFD.
#[derive(Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes are valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: keep it.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left when generation ends (an unfinished character).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Finds stop sequences in streamed text. Text that might be the start of
/// a stop sequence is held back until the next piece decides.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What `push` found.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Text safe to send now.
    pub emit: String,
    /// A stop sequence was seen: generation ends, nothing after it is sent.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Pushed {
        self.held.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return Pushed {
                emit,
                stopped: true,
            };
        }
        let keep = self.partial_suffix_len();
        let emit = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        Pushed {
            emit,
            stopped: false,
        }
    }

    /// Held-back text, sent when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of `held` that begin some stop sequence (the
    /// longest such suffix, on a character boundary).
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        held.char_indices()
            .map(|(i, _)| &held[i..])
            .find(|suffix| self.stops.iter().any(|s| s.starts_with(suffix)))
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_waits_for_the_rest_of_a_character() {
        let mut d = Utf8Decoder::default();
        let bytes = "巴黎".as_bytes();
        assert_eq!(d.push(&bytes[..2]), "");
        assert_eq!(d.push(&bytes[2..4]), "巴");
        assert_eq!(d.push(&bytes[4..]), "黎");
        assert_eq!(d.push(b"\xffok"), "\u{fffd}ok");
        assert_eq!(d.push(&[0xe5]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_sequences_spanning_pieces_are_cut() {
        let mut m = StopMatcher::new(vec!["\nUser:".into(), "END".into()]);
        assert_eq!(
            m.push("Paris is the capital."),
            Pushed {
                emit: "Paris is the capital.".into(),
                stopped: false
            }
        );
        // "\nUs" could begin "\nUser:": held back.
        assert_eq!(
            m.push("\nUs"),
            Pushed {
                emit: String::new(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("er: next"),
            Pushed {
                emit: String::new(),
                stopped: true
            }
        );

        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(
            m.push("the EN"),
            Pushed {
                emit: "the ".into(),
                stopped: false
            }
        );
        // Not a stop after all: the held text goes out.
        assert_eq!(
            m.push("ter"),
            Pushed {
                emit: "ENter".into(),
                stopped: false
            }
        );
    }

    #[test]
    fn stop_inside_one_piece_and_finish_flushes() {
        let mut m = StopMatcher::new(vec!["。".into(), String::new()]);
        assert_eq!(
            m.push("好的。再见"),
            Pushed {
                emit: "好的".into(),
                stopped: true
            }
        );
        let mut m = StopMatcher::new(vec!["<|end|>".into()]);
        assert_eq!(m.push("done <|e").emit, "done ");
        assert_eq!(m.finish(), "<|e");
        // No stops: everything passes at once.
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc").emit, "abc");
    }
}
