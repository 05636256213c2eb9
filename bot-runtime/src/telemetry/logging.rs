//! Log output: text or one JSON object per line, through
//! tracing-appender's non-blocking writer.

use clawdbot_config::{LogFormat, RuntimeConfig};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines a logging thread may have queued before it waits for the writer.
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Logs go to stdout through tracing-appender's writer thread, so a
/// request's log line is a queue push, not a write system call on a
/// runtime worker. Nothing is dropped (not lossy): with the queue full the
/// logging thread waits, as on a slow stdout. The guard writes out what is
/// left when `serve` returns.
pub fn init(cfg: &RuntimeConfig) -> WorkerGuard {
    // llama.cpp narrates every model load at info level (dozens of lines):
    // only its warnings, unless RUST_LOG asks for more.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},llama-cpp-2=warn", cfg.logging.level)))
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cfg.logging.format {
        // One object per line: timestamp, level, the event's fields, target
        // and the current span's fields (request id, route) under "span".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
