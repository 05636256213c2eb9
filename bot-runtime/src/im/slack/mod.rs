//! Slack: v0 request signatures, Events API parsing, chat.postMessage builders.

mod protocol;
pub mod reply;

pub use protocol::*;
