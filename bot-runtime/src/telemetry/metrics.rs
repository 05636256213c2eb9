//! Prometheus metrics of the runtime, one registry per process.

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_duration: HistogramVec,
    pub model_duration: HistogramVec,
    pub model_ttft: HistogramVec,
    pub model_tokens: IntCounterVec,
    pub model_circuit_open: IntGaugeVec,
    pub active_streams: IntGauge,
    pub sessions: IntGauge,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub redis_errors: IntCounterVec,
    pub log_queue_depth: IntGauge,
    pub log_write_failures: IntCounter,
    pub log_spilled: IntCounter,
    pub webhook_requests: IntCounterVec,
    pub channel_reply_duration: HistogramVec,
    pub channel_replies: IntCounterVec,
    pub channel_deliveries_in_flight: IntGauge,
    pub notifications: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "clawdbot_http_request_duration_seconds",
                "HTTP request duration until the response head is sent (streams: until the stream starts).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            // `stream`: whether the answer is an event stream. A stream's head
            // is what a user waits for; a whole answer is mostly generation
            // time. Alerts and dashboards tell the two apart by it.
            &["route", "method", "status", "stream"],
        )
        .expect("valid metric");
        let model_duration = HistogramVec::new(
            HistogramOpts::new(
                "clawdbot_model_request_duration_seconds",
                "Model call duration, request to last token.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "outcome"],
        )
        .expect("valid metric");
        let model_ttft = HistogramVec::new(
            HistogramOpts::new(
                "clawdbot_model_time_to_first_token_seconds",
                "Time from the model call to its first content token (streams).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "outcome"],
        )
        .expect("valid metric");
        let model_tokens = IntCounterVec::new(
            Opts::new(
                "clawdbot_model_tokens_total",
                "Tokens reported by the model.",
            ),
            &["provider", "kind"],
        )
        .expect("valid metric");
        let model_circuit_open = IntGaugeVec::new(
            Opts::new(
                "clawdbot_model_circuit_open",
                "1 while the circuit breaker of an upstream endpoint is open (calls skip it).",
            ),
            &["provider", "endpoint"],
        )
        .expect("valid metric");
        let active_streams =
            IntGauge::new("clawdbot_active_streams", "Streaming responses in flight.")
                .expect("valid metric");
        let sessions =
            IntGauge::new("clawdbot_sessions", "Sessions held in memory.").expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "clawdbot_auth_failures_total",
                "Requests refused for a missing or wrong API key.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "clawdbot_rate_limited_total",
                "Requests refused by a rate limit.",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "clawdbot_redis_errors_total",
                "Failed requests to the Redis session store.",
            ),
            &["op"],
        )
        .expect("valid metric");
        let log_queue_depth = IntGauge::new(
            "clawdbot_log_queue_depth",
            "Conversation log exchanges waiting in memory for the database writer.",
        )
        .expect("valid metric");
        let log_write_failures = IntCounter::new(
            "clawdbot_log_write_failures_total",
            "Failed conversation log database writes and probes (each is retried or spilled).",
        )
        .expect("valid metric");
        let log_spilled = IntCounter::new(
            "clawdbot_log_spilled_total",
            "Conversation log exchanges written to the local spill file.",
        )
        .expect("valid metric");
        let webhook_requests = IntCounterVec::new(
            Opts::new(
                "clawdbot_webhook_requests_total",
                "IM deliveries received (webhooks and long connections), by outcome: \
                 accepted, duplicate, bad_signature, stale, bad_token, replayed, malformed, ignored, handshake, unavailable.",
            ),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        let channel_reply_duration = HistogramVec::new(
            HistogramOpts::new(
                "clawdbot_channel_reply_duration_seconds",
                "Time from receiving an IM message to the platform accepting our reply.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["channel"],
        )
        .expect("valid metric");
        let channel_replies = IntCounterVec::new(
            Opts::new(
                "clawdbot_channel_replies_total",
                "IM replies by outcome: sent, failed (after every retry).",
            ),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        let channel_deliveries_in_flight = IntGauge::new(
            "clawdbot_channel_deliveries_in_flight",
            "IM deliveries this replica is answering now.",
        )
        .expect("valid metric");
        let notifications = IntCounterVec::new(
            Opts::new(
                "clawdbot_notifications_total",
                "Outbound robot notifications by outcome: sent, failed, rejected (queue full).",
            ),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        let m = Self {
            registry,
            http_duration,
            model_duration,
            model_ttft,
            model_tokens,
            model_circuit_open,
            active_streams,
            sessions,
            auth_failures,
            rate_limited,
            redis_errors,
            log_queue_depth,
            log_write_failures,
            log_spilled,
            webhook_requests,
            channel_reply_duration,
            channel_replies,
            channel_deliveries_in_flight,
            notifications,
        };
        for c in m.collectors() {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.http_duration.clone()),
            Box::new(self.webhook_requests.clone()),
            Box::new(self.channel_reply_duration.clone()),
            Box::new(self.channel_replies.clone()),
            Box::new(self.channel_deliveries_in_flight.clone()),
            Box::new(self.notifications.clone()),
            Box::new(self.log_queue_depth.clone()),
            Box::new(self.log_write_failures.clone()),
            Box::new(self.log_spilled.clone()),
            Box::new(self.model_duration.clone()),
            Box::new(self.model_ttft.clone()),
            Box::new(self.model_tokens.clone()),
            Box::new(self.model_circuit_open.clone()),
            Box::new(self.active_streams.clone()),
            Box::new(self.sessions.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.redis_errors.clone()),
        ]
    }

    /// Every series name the runtime can export (a histogram's `_bucket`,
    /// `_count` and `_sum`), whether or not it has been observed yet: what
    /// dashboards and alert rules may name.
    pub fn series_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for c in self.collectors() {
            for mf in c.collect() {
                let name = mf.name().to_owned();
                if mf.get_field_type() == MetricType::HISTOGRAM {
                    names.extend(["_bucket", "_count", "_sum"].map(|s| format!("{name}{s}")));
                } else {
                    names.push(name);
                }
            }
        }
        names
    }

    pub fn webhook(&self, channel: &str, outcome: &str) {
        self.webhook_requests
            .with_label_values(&[channel, outcome])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The model call histograms and token counters, for whoever observes
/// model calls (cheap to clone: shared handles).
#[derive(Clone)]
pub struct ModelMetrics {
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    pub tokens: IntCounterVec,
}

impl ModelMetrics {
    pub fn record_tokens(&self, provider: &str, prompt: u64, completion: u64) {
        self.tokens
            .with_label_values(&[provider, "prompt"])
            .inc_by(prompt);
        self.tokens
            .with_label_values(&[provider, "completion"])
            .inc_by(completion);
    }
}

impl Metrics {
    /// The model calls' handles.
    pub fn model(&self) -> ModelMetrics {
        ModelMetrics {
            duration: self.model_duration.clone(),
            ttft: self.model_ttft.clone(),
            tokens: self.model_tokens.clone(),
        }
    }

    /// The conversation log writer's handles.
    pub fn log_writer(&self) -> crate::convlog::WriterMetrics {
        crate::convlog::WriterMetrics {
            queue_depth: self.log_queue_depth.clone(),
            write_failures: self.log_write_failures.clone(),
            spilled: self.log_spilled.clone(),
        }
    }
}

impl Metrics {
    /// Registers a component's own metrics (the local model's) with the
    /// runtime's registry; a name taken twice is logged, not fatal.
    pub fn register_all(&self, collectors: Vec<Box<dyn Collector>>) {
        for c in collectors {
            if let Err(e) = self.registry.register(c) {
                tracing::warn!(error = %e, "metric not registered");
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps `clawdbot_active_streams` right however a stream ends.
pub struct StreamGauge(IntGauge);

impl StreamGauge {
    pub fn start(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
