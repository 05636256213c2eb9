//! Frames of Feishu / Lark's long connection: the `pbbp2.Frame` protobuf
//! (proto2), through prost's derive (no .proto file, no build script).
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
//! The optional fields are read as empty when absent and not written when
//! empty, which is what the server does with them.

use prost::Message;

pub use prost::DecodeError as FrameError;

/// `Frame.method` of pings and pongs.
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of events (and their answers).
pub const METHOD_DATA: i32 = 1;

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, tag = "6")]
    pub payload_encoding: String,
    #[prost(string, tag = "7")]
    pub payload_type: String,
    #[prost(bytes = "vec", tag = "8")]
    pub payload: Vec<u8>,
    #[prost(string, tag = "9")]
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

pub fn encode(frame: &Frame) -> Vec<u8> {
    frame.encode_to_vec()
}

/// Never panics: bad varints, lengths past the end, text that is not
/// UTF-8 and known fields with the wrong wire type are errors; unknown
/// fields are skipped.
pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
    Frame::decode(buf)
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
    fn unknown_fields_are_skipped_wrong_wire_types_refused() {
        let mut bytes = encode(&sample());
        bytes.extend_from_slice(&[0x50, 0x05]); // field 10 varint
        bytes.extend_from_slice(&[0x59, 1, 2, 3, 4, 5, 6, 7, 8]); // field 11 fixed64
        bytes.extend_from_slice(&[0x65, 1, 2, 3, 4]); // field 12 fixed32
        bytes.extend_from_slice(&[0x6a, 0x02, 0xff, 0xfe]); // field 13 bytes
        assert_eq!(decode(&bytes).unwrap(), sample());
        let mut wrong = bytes.clone();
        wrong.extend_from_slice(&[0x0a, 0x01, 0x00]); // SeqID sent as bytes
        assert!(decode(&wrong).is_err());
        let mut wrong = bytes;
        wrong.extend_from_slice(&[0x40, 0x03]); // payload sent as a varint
        assert!(decode(&wrong).is_err());
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
        for bad in [
            &[0x08][..],         // truncated varint
            &[0x08, 0x80],       // truncated varint
            &[0x42, 0x05, 1, 2], // length past the end
            &[
                0x42, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // huge length
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // varint overflow
            &[0x80; 12],         // varint too long
            &[0x00, 0x00],       // field 0
            &[0x0b],             // a group
            &[0x4a, 0x01, 0xff], // LogIDNew not UTF-8
            &[0x2a, 0x03, 0x0a, 0x01, 0xc3], // header key not UTF-8
            &[0x2a, 0x02, 0x0a, 0x05], // header truncated
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
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
