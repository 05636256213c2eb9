//! Conversations: the engine that turns a turn into a model request and
//! observes it, the session stores (memory or Redis), and the model
//! providers.

pub mod engine;
pub mod model;
pub mod sessions;
