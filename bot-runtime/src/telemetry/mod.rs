//! What the runtime says about itself: Prometheus metrics and the log
//! output (text or JSON lines, through a non-blocking writer).

pub mod logging;
pub mod metrics;
