//! The local model's own metrics: queue, queue wait, tokens and speed.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Opts};

#[derive(Clone)]
pub struct LocalMetrics {
    pub queue_depth: IntGauge,
    pub active: IntGauge,
    pub queue_wait: Histogram,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    /// Tokens per second of the last decode step (all sequences together).
    pub step_tokens_per_second: Gauge,
    pub step_seconds: Histogram,
}

impl LocalMetrics {
    pub fn new() -> Self {
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        Self {
            queue_depth: gauge(
                "clawdbot_local_model_queue_depth",
                "Requests waiting for a free sequence of the local model.",
            ),
            active: gauge(
                "clawdbot_local_model_active_sequences",
                "Conversations the local model is generating now.",
            ),
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "clawdbot_local_model_queue_wait_seconds",
                    "Time a request waited for a free sequence.",
                )
                .buckets(vec![
                    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .expect("valid metric"),
            prompt_tokens: counter(
                "clawdbot_local_model_prompt_tokens_total",
                "Prompt tokens the local model has read (prefill).",
            ),
            completion_tokens: counter(
                "clawdbot_local_model_completion_tokens_total",
                "Tokens the local model has generated; rate() of it is tokens/s.",
            ),
            step_tokens_per_second: Gauge::with_opts(Opts::new(
                "clawdbot_local_model_step_tokens_per_second",
                "Tokens per second of the latest decode step, all sequences together.",
            ))
            .expect("valid metric"),
            step_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "clawdbot_local_model_step_seconds",
                    "Duration of one batched decode step.",
                )
                .buckets(vec![
                    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            )
            .expect("valid metric"),
        }
    }

    pub fn observe_step(&self, tokens: usize, took: Duration) {
        let secs = took.as_secs_f64();
        self.step_seconds.observe(secs);
        if secs > 0.0 {
            self.step_tokens_per_second.set(tokens as f64 / secs);
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.queue_depth.clone()),
            Box::new(self.active.clone()),
            Box::new(self.queue_wait.clone()),
            Box::new(self.prompt_tokens.clone()),
            Box::new(self.completion_tokens.clone()),
            Box::new(self.step_tokens_per_second.clone()),
            Box::new(self.step_seconds.clone()),
        ]
    }
}
