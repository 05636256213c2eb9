//! clawdbot-operator: reconciles `ClawdBot` resources into running
//! bot-runtime deployments.

pub mod controller;
pub mod crd;
pub mod credentials;
pub mod encryption;
pub mod http;
pub mod labels;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod permissions;
pub mod render;
pub mod status;
pub mod validate;
