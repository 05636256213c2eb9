//! Benchmark and test support for ClawdBot: a mock OpenAI-compatible
//! upstream, a fixed-rate / closed-loop HTTP load generator, and signed /
//! encrypted IM webhook deliveries for it.

pub mod im;
pub mod loadgen;
pub mod mock;
