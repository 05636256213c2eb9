//! Small adapters over libraries that several features share: the TLS
//! provider, Redis connections and RFC 3339 times. No feature logic.

pub mod redis;
pub mod timefmt;
pub mod tls;
