//! Frames of Feishu / Lark's long connection: the `pbbp2.Frame` protobuf
//! (proto2), encoded and decoded by hand so the crate needs neither a
//! protobuf runtime nor a build script.
//!
//! ```text
//! message Header { required string key = 1; required string value = 2; }
//! message Frame {
//!   required uint64 SeqID = 1;  required uint64 LogID = 2;
//!   required int32 service = 3; required int32 method = 4;
//!   repeated Header headers = 5;
//!   optional string payload_encoding = 6; optional string payload_type = 7;
//!   optional bytes payload = 8;           optional string LogIDNew = 9;
//! }
//! ```
//!
//! Decoding never panics: bad varints, lengths past the end and groups are
//! errors; unknown fields, and known fields with an unexpected wire type,
//! are skipped as protobuf parsers do.

/// `Frame.method` of pings and pongs.
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of events (and their answers).
pub const METHOD_DATA: i32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub seq_id: u64,
    pub log_id: u64,
    pub service: i32,
    pub method: i32,
    pub headers: Vec<Header>,
    pub payload_encoding: String,
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub log_id_new: String,
}

impl Frame {
    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    pub fn push_header(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated")]
    Truncated,
    #[error("varint too long")]
    VarintOverflow,
    #[error("field number 0")]
    FieldZero,
    #[error("unsupported wire type {0}")]
    WireType(u8),
    #[error("field {0} is not UTF-8")]
    NotUtf8(u32),
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + frame.payload.len());
    // The four required fields are always written, even when zero.
    put_varint_field(&mut out, 1, frame.seq_id);
    put_varint_field(&mut out, 2, frame.log_id);
    // int32 goes on the wire sign-extended to 64 bits.
    put_varint_field(&mut out, 3, frame.service as i64 as u64);
    put_varint_field(&mut out, 4, frame.method as i64 as u64);
    for h in &frame.headers {
        let mut inner = Vec::with_capacity(4 + h.key.len() + h.value.len());
        put_len_field(&mut inner, 1, h.key.as_bytes());
        put_len_field(&mut inner, 2, h.value.as_bytes());
        put_len_field(&mut out, 5, &inner);
    }
    put_opt_len_field(&mut out, 6, frame.payload_encoding.as_bytes());
    put_opt_len_field(&mut out, 7, frame.payload_type.as_bytes());
    put_opt_len_field(&mut out, 8, &frame.payload);
    put_opt_len_field(&mut out, 9, frame.log_id_new.as_bytes());
    out
}

pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
    let mut frame = Frame::default();
    let mut r = Reader { buf };
    while !r.is_empty() {
        let (field, wire) = r.tag()?;
        match (field, wire) {
            (1, WIRE_VARINT) => frame.seq_id = r.varint()?,
            (2, WIRE_VARINT) => frame.log_id = r.varint()?,
            // Truncating to the low 32 bits is how protobuf reads int32.
            (3, WIRE_VARINT) => frame.service = r.varint()? as u32 as i32,
            (4, WIRE_VARINT) => frame.method = r.varint()? as u32 as i32,
            (5, WIRE_LEN) => frame.headers.push(decode_header(r.bytes()?)?),
            (6, WIRE_LEN) => frame.payload_encoding = utf8(6, r.bytes()?)?,
            (7, WIRE_LEN) => frame.payload_type = utf8(7, r.bytes()?)?,
            (8, WIRE_LEN) => frame.payload = r.bytes()?.to_vec(),
            (9, WIRE_LEN) => frame.log_id_new = utf8(9, r.bytes()?)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(frame)
}

fn decode_header(buf: &[u8]) -> Result<Header, FrameError> {
    let mut header = Header::default();
    let mut r = Reader { buf };
    while !r.is_empty() {
        let (field, wire) = r.tag()?;
        match (field, wire) {
            (1, WIRE_LEN) => header.key = utf8(1, r.bytes()?)?,
            (2, WIRE_LEN) => header.value = utf8(2, r.bytes()?)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(header)
}

fn utf8(field: u32, bytes: &[u8]) -> Result<String, FrameError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8(field))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WIRE_VARINT));
    put_varint(out, v);
}

fn put_len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Optional fields left empty are not written (proto2 "not set").
fn put_opt_len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_field(out, field, bytes);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.buf.len() {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut value = 0u64;
        for i in 0..10 {
            let [b] = self.take(1)? else {
                return Err(FrameError::Truncated);
            };
            let b = *b;
            // The tenth byte holds only the 64th bit.
            if i == 9 && b > 1 {
                return Err(FrameError::VarintOverflow);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(FrameError::VarintOverflow)
    }

    fn tag(&mut self) -> Result<(u64, u8), FrameError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(FrameError::FieldZero);
        }
        Ok((field, (key & 7) as u8))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = usize::try_from(self.varint()?).map_err(|_| FrameError::Truncated)?;
        self.take(len)
    }

    fn skip(&mut self, wire: u8) -> Result<(), FrameError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.bytes().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            // Groups (3, 4) are deprecated and never used by pbbp2; 6 and 7
            // do not exist.
            other => Err(FrameError::WireType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        let mut f = Frame {
            seq_id: 7,
            log_id: 300,
            service: 12345,
            method: METHOD_DATA,
            payload: br#"{"schema":"2.0"}"#.to_vec(),
            ..Frame::default()
        };
        f.push_header("type", "event");
        f.push_header("message_id", "m-1");
        f.push_header("sum", "1");
        f.push_header("seq", "0");
        f
    }

    #[test]
    fn known_bytes() {
        let mut f = Frame {
            seq_id: 1,
            log_id: 150,
            service: 2,
            method: METHOD_CONTROL,
            ..Frame::default()
        };
        f.push_header("type", "ping");
        let bytes = encode(&f);
        let expected: &[u8] = &[
            0x08, 0x01, // SeqID 1
            0x10, 0x96, 0x01, // LogID 150
            0x18, 0x02, // service 2
            0x20, 0x00, // method 0
            0x2a, 0x0c, // headers, 12 bytes
            0x0a, 0x04, b't', b'y', b'p', b'e', // key
            0x12, 0x04, b'p', b'i', b'n', b'g', // value
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(expected).unwrap(), f);
    }

    #[test]
    fn round_trip_and_header_lookup() {
        let f = sample();
        let back = decode(&encode(&f)).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.header("message_id"), Some("m-1"));
        assert_eq!(back.header("missing"), None);
    }

    #[test]
    fn negative_int32_is_sign_extended() {
        let f = Frame {
            service: -1,
            method: i32::MIN,
            ..Frame::default()
        };
        let bytes = encode(&f);
        // Each negative int32 takes ten bytes on the wire.
        assert_eq!(bytes.len(), 2 + 2 + 11 + 11);
        assert_eq!(decode(&bytes).unwrap(), f);
    }

    #[test]
    fn unknown_fields_and_wrong_wire_types_are_skipped() {
        let mut bytes = encode(&sample());
        bytes.extend_from_slice(&[0x50, 0x05]); // field 10 varint
        bytes.extend_from_slice(&[0x59, 1, 2, 3, 4, 5, 6, 7, 8]); // field 11 fixed64
        bytes.extend_from_slice(&[0x65, 1, 2, 3, 4]); // field 12 fixed32
        bytes.extend_from_slice(&[0x6a, 0x02, 0xff, 0xfe]); // field 13 bytes
        bytes.extend_from_slice(&[0x0a, 0x01, 0x00]); // SeqID sent as bytes
        bytes.extend_from_slice(&[0x40, 0x03]); // payload sent as a varint
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn last_scalar_wins_headers_accumulate() {
        let mut bytes = encode(&sample());
        bytes.extend_from_slice(&[0x08, 0x09]);
        bytes.extend_from_slice(&[0x2a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']);
        let f = decode(&bytes).unwrap();
        assert_eq!(f.seq_id, 9);
        assert_eq!(f.headers.len(), 5);
        assert_eq!(f.header("k"), Some("v"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(decode(&[0x08]), Err(FrameError::Truncated));
        assert_eq!(decode(&[0x08, 0x80]), Err(FrameError::Truncated));
        assert_eq!(decode(&[0x42, 0x05, 1, 2]), Err(FrameError::Truncated));
        assert_eq!(
            decode(&[
                0x42, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            decode(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02
            ]),
            Err(FrameError::VarintOverflow)
        );
        assert_eq!(decode(&[0x80; 12]), Err(FrameError::VarintOverflow));
        assert_eq!(decode(&[0x00, 0x00]), Err(FrameError::FieldZero));
        assert_eq!(decode(&[0x0b]), Err(FrameError::WireType(3)));
        assert_eq!(decode(&[0x4a, 0x01, 0xff]), Err(FrameError::NotUtf8(9)));
        assert_eq!(
            decode(&[0x2a, 0x03, 0x0a, 0x01, 0xc3]),
            Err(FrameError::NotUtf8(1))
        );
        assert_eq!(
            decode(&[0x2a, 0x02, 0x0a, 0x05]),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode(&[]), Ok(Frame::default()));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let header =
            (any::<String>(), any::<String>()).prop_map(|(key, value)| Header { key, value });
        (
            (any::<u64>(), any::<u64>(), any::<i32>(), any::<i32>()),
            proptest::collection::vec(header, 0..4),
            (any::<String>(), any::<String>(), any::<String>()),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |((seq_id, log_id, service, method), headers, (enc, ty, new), payload)| Frame {
                    seq_id,
                    log_id,
                    service,
                    method,
                    headers,
                    payload_encoding: enc,
                    payload_type: ty,
                    payload,
                    log_id_new: new,
                },
            )
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mangled_frames(f in any_frame(), cut in any::<usize>(), flip in any::<(usize, u8)>()) {
            let mut bytes = encode(&f);
            if !bytes.is_empty() {
                let i = flip.0 % bytes.len();
                bytes[i] ^= flip.1;
                bytes.truncate(cut % (bytes.len() + 1));
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trip(f in any_frame()) {
            prop_assert_eq!(decode(&encode(&f)), Ok(f));
        }
    }
}
