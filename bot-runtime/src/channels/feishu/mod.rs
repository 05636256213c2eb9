//! Feishu / Lark: event verification, decryption and parsing, reply
//! builders, custom-bot signing (`protocol`), and the long-connection client
//! (`ws`, frames in `frame`).

pub mod frame;
mod protocol;
pub mod ws;

pub use protocol::*;
