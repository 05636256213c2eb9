//! Benchmark and test support for ClawdBot: a mock OpenAI-compatible
//! upstream and a fixed-rate / closed-loop HTTP load generator.

pub mod loadgen;
pub mod mock;
