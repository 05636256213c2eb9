//! Incremental server-sent-events decoder for upstream streams: bytes may
//! split anywhere, lines end in `\n` or `\r\n`, an event ends at a blank line.

use bytes::{Buf, Bytes, BytesMut};

/// Largest event we buffer; a longer one is an upstream fault, not a reason
/// to grow without bound.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct SseDecoder {
    buf: BytesMut,
    data: Vec<u8>,
    has_data: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("upstream event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl SseDecoder {
    /// Feeds bytes; returns the `data` payloads of every event completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Bytes>, EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line = self.buf.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(pos - 1);
            }
            if line.is_empty() {
                if self.has_data {
                    events.push(Bytes::from(std::mem::take(&mut self.data)));
                    self.has_data = false;
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            // `event:`, `id:`, `retry:` and comments carry nothing we use.
        }
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            self.buf.advance(self.buf.len());
            return Err(EventTooLarge);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Bytes> {
        let mut d = SseDecoder::default();
        chunks.iter().flat_map(|c| d.push(c).unwrap()).collect()
    }

    #[test]
    fn decodes_events_split_anywhere() {
        let stream =
            b"data: {\"a\":1}\n\n: comment\r\ndata: x\r\ndata: y\r\n\r\nevent: e\ndata: [DONE]\n\n";
        let whole = decode_all(&[stream]);
        assert_eq!(
            whole,
            vec![Bytes::from("{\"a\":1}"), "x\ny".into(), "[DONE]".into()]
        );
        for cut in 0..stream.len() {
            assert_eq!(
                decode_all(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_not_emitted() {
        assert!(decode_all(&[b"data: partial\n"]).is_empty());
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = SseDecoder::default();
            for p in parts {
                let _ = d.push(&p);
            }
        }
    }
}
