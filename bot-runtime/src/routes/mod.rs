//! The HTTP handlers over `AppState`, and the router that puts them
//! behind the request layers (`router.rs`).

pub mod chat;
pub mod conversations;
pub mod health;
pub mod notifications;
pub mod openai;
pub mod router;
pub mod web;
pub mod webhooks;

pub use router::{metrics_router, router};
