//! WeCom: callback signature, AES-256-CBC message crypto, XML parsing and
//! message-send builders.

mod protocol;
pub mod reply;

pub use protocol::*;
