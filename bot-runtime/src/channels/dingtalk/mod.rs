//! DingTalk: HTTP callback verification and parsing, reply builders,
//! custom-robot signing (`protocol`), and the Stream-mode client (`stream`).

mod protocol;
pub mod stream;

pub use protocol::*;
