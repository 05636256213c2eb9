//! The fields of a Feishu event callback that we read (v2 and v1 schemas,
//! `url_verification`), deserialized in one pass and borrowed from the
//! plaintext wherever no escape forces a copy. Building a `serde_json::Value`
//! first cost more than decrypting the event.
//!
//! Every field is lenient, as a walk over a `Value` would be: a field that is
//! absent, empty or of another JSON type reads as absent, so the caller's
//! "missing X" names it. Other fields are skipped unread.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// An event callback, either schema.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub schema: Text<'a>,
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
    /// v1 and `url_verification`; v2 has it in the header.
    #[serde(borrow)]
    pub token: Text<'a>,
    #[serde(borrow)]
    pub challenge: Text<'a>,
    /// v1's delivery id.
    #[serde(borrow)]
    pub uuid: Text<'a>,
    #[serde(borrow)]
    pub header: Obj<Header<'a>>,
    #[serde(borrow)]
    pub event: Obj<Body<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header<'a> {
    #[serde(borrow)]
    pub event_id: Text<'a>,
    #[serde(borrow)]
    pub event_type: Text<'a>,
    #[serde(borrow)]
    pub token: Text<'a>,
}

/// `event`: v2's `sender` and `message`, or v1's flat fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Body<'a> {
    #[serde(borrow)]
    pub sender: Obj<Sender<'a>>,
    #[serde(borrow)]
    pub message: Obj<Message<'a>>,
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub msg_type: Text<'a>,
    #[serde(borrow)]
    pub open_message_id: Text<'a>,
    #[serde(borrow)]
    pub open_chat_id: Text<'a>,
    #[serde(borrow)]
    pub open_id: Text<'a>,
    #[serde(borrow)]
    pub text_without_at_bot: Text<'a>,
    #[serde(borrow)]
    pub text: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sender<'a> {
    #[serde(borrow)]
    pub sender_type: Text<'a>,
    #[serde(borrow)]
    pub sender_id: Obj<SenderId<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SenderId<'a> {
    #[serde(borrow)]
    pub open_id: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub message_id: Text<'a>,
    #[serde(borrow)]
    pub chat_id: Text<'a>,
    #[serde(borrow)]
    pub message_type: Text<'a>,
    /// A JSON document inside a string.
    #[serde(borrow)]
    pub content: Text<'a>,
    #[serde(borrow)]
    pub mentions: MentionKeys<'a>,
}

/// A text message's `content`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TextContent<'a> {
    #[serde(borrow)]
    pub text: Text<'a>,
}

/// Parses a JSON object into `T`; `Ok(None)` for any other JSON value.
pub fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> serde_json::Result<Option<T>> {
    serde_json::from_slice::<Obj<T>>(json).map(|o| o.0)
}

/// A string field: [`Text::get`] is `None` when it was absent, empty or
/// not a string.
#[derive(Debug, Default)]
pub struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

/// An object field: `None` when absent or not an object.
#[derive(Debug)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// The non-empty `key`s of a `mentions` array (anything else: none).
#[derive(Debug, Default)]
pub struct MentionKeys<'a>(pub Vec<Cow<'a, str>>);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Mention<'a> {
    #[serde(borrow)]
    key: Text<'a>,
}

/// Reads past a value this field does not take.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Scalars that are not strings read as `T::default()`.
macro_rules! scalars_read_as_default {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Text<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(s))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'a>, A::Error> {
                skip_seq(seq).map(|()| Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'a>, A::Error> {
                skip_map(map).map(|()| Text(None))
            }
            scalars_read_as_default!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Obj<T>, A::Error> {
                skip_seq(seq).map(|()| Obj(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            scalars_read_as_default!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MentionKeys<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<MentionKeys<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MentionKeys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some(m) = seq.next_element::<Obj<Mention<'a>>>()? {
                    if let Some(key) = m.0.and_then(|m| m.key.0).filter(|k| !k.is_empty()) {
                        keys.push(key);
                    }
                }
                Ok(MentionKeys(keys))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| MentionKeys::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MentionKeys::default())
            }
            scalars_read_as_default!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_borrow_unless_escaped() {
        let json = br#"{"schema":"2.0","token":"a\"b","header":{"event_id":"e1"}}"#;
        let e: Envelope = object(json).unwrap().unwrap();
        assert!(matches!(e.schema.0, Some(Cow::Borrowed("2.0"))));
        assert!(matches!(e.token.0, Some(Cow::Owned(ref s)) if s == "a\"b"));
        assert_eq!(e.header.0.unwrap().event_id.get(), Some("e1"));
    }

    #[test]
    fn fields_of_another_type_read_as_absent() {
        let odd = json!({
            "schema": 2, "type": ["url_verification"], "token": {"a": 1}, "challenge": null,
            "header": "h", "event": {"sender": [1], "message": {"mentions": {"key": "@_user_1"},
            "content": 5, "message_id": true}}, "extra": {"deep": [{"x": [1, 2, {"y": "z"}]}]}
        });
        let odd = odd.to_string();
        let e: Envelope = object(odd.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (
                e.schema.get(),
                e.kind.get(),
                e.token.get(),
                e.challenge.get()
            ),
            (None, None, None, None)
        );
        assert!(e.header.0.is_none());
        let body = e.event.0.unwrap();
        assert!(body.sender.0.is_none());
        let msg = body.message.0.unwrap();
        assert!(msg.mentions.0.is_empty());
        assert_eq!((msg.content.get(), msg.message_id.get()), (None, None));
    }

    #[test]
    fn mention_keys_skip_empty_and_odd_entries() {
        let m = json!({"mentions": [{"key": "@_user_1"}, {"key": ""}, 3, {"id": 1}, {"key": "@_user_2"}]});
        let m = m.to_string();
        let msg: Message = object(m.as_bytes()).unwrap().unwrap();
        assert_eq!(msg.mentions.0, ["@_user_1", "@_user_2"]);
    }

    #[test]
    fn only_objects_parse() {
        assert!(object::<Envelope>(b"[1]").unwrap().is_none());
        assert!(object::<Envelope>(b"\"x\"").unwrap().is_none());
        assert!(object::<Envelope>(b"{\"a\":").is_err());
        assert!(object::<Envelope>(b"{} trailing").is_err());
    }
}
