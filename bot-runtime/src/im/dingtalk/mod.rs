//! DingTalk: HTTP callback verification and parsing, reply builders,
//! custom-robot signing (`protocol`), the callback signature's binding to
//! its message (`replay`), the API client (`reply`) and the Stream-mode
//! client (`stream`).

mod protocol;
pub mod replay;
pub mod reply;
pub mod stream;

pub use protocol::*;
