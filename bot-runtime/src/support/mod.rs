//! Small adapters over libraries that several features share: the TLS
//! provider, Redis connections, RFC 3339 times and the image's health
//! check client. No feature logic.

pub mod healthcheck;
pub mod redis;
pub mod timefmt;
pub mod tls;
