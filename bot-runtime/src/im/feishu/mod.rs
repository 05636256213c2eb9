//! Feishu / Lark: event verification, decryption and parsing, reply
//! builders, custom-bot signing (`protocol`; the fields read from an event
//! in `event`), and the long-connection client (`ws`, frames in `frame`).

mod event;
pub mod frame;
mod protocol;
pub mod reply;
pub mod ws;

pub use protocol::*;
