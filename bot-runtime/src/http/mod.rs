//! HTTP plumbing that knows nothing of the app's state: the client's
//! address behind trusted proxies, per-client rate limits, the drain
//! (readiness and in-flight work at shutdown), JSON extractors and the
//! error bodies every route answers with. The handlers are in `routes`.

pub mod client_ip;
pub mod drain;
pub mod error;
pub mod extract;
pub mod ratelimit;
