//! Fixed-rate / closed-loop HTTP/1.1 load generator for loopback targets.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use clawdbot_bench::loadgen::{self, Config, Mode, Target};
use hyper::Method;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "HTTP/1.1 load generator (loopback targets only)",
    long_about = "HTTP/1.1 keep-alive load generator for loopback targets.\n\n\
        --rate: open loop; latency counts from each request's due time whenever \
        it had to wait for a busy connection, so a stalled server cannot hide \
        its backlog (no coordinated omission).\n\
        --connections alone: closed loop, each connection sends back to back.\n\n\
        JSON fields: requests (HTTP responses of any status), errors (connect/IO \
        failures and timeouts), non_2xx, duration_s (measured window), rps (2xx per \
        second), p50/p90/p99/max_ms (2xx total latency), ttft_p50/p99_ms (--stream: \
        time to the first SSE chunk with non-empty delta.content)."
)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Request body; with it the method defaults to POST, else GET.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// HTTP method (default: POST with a body, GET without).
    #[arg(long)]
    method: Option<String>,
    /// Extra header 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Fixed request rate (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections: the pool for --rate (default 32), or the closed-loop
    /// concurrency without --rate.
    #[arg(long)]
    connections: Option<usize>,
    /// Measured window in seconds.
    #[arg(long)]
    duration_secs: f64,
    /// Load before the window that is not measured.
    #[arg(long, default_value_t = 0.0)]
    warmup_secs: f64,
    /// Parse SSE responses and report time to first content token.
    #[arg(long)]
    stream: bool,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Tokio worker threads (1 runs a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = Target::parse(&args.url)?;
    let body = match &args.body_file {
        Some(p) => {
            Bytes::from(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => Bytes::new(),
    };
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.as_bytes())?,
        None if args.body_file.is_some() => Method::POST,
        None => Method::GET,
    };
    let headers = args
        .headers
        .iter()
        .map(|h| loadgen::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mode = match (args.rate, args.connections) {
        (Some(rps), c) => Mode::Rate {
            rps,
            connections: c.unwrap_or(32),
        },
        (None, Some(connections)) => Mode::Closed { connections },
        (None, None) => anyhow::bail!("give --rate or --connections"),
    };
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).with_context(|| format!("bad {what}: {s}"))
    };
    let cfg = Config {
        target,
        method,
        body,
        headers,
        mode,
        duration: secs(args.duration_secs, "--duration-secs")?,
        warmup: secs(args.warmup_secs, "--warmup-secs")?,
        stream: args.stream,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    if cfg.duration.is_zero() {
        anyhow::bail!("--duration-secs must be > 0");
    }

    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let report = rt.enable_all().build()?.block_on(loadgen::run(cfg))?;

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} ms"));
        println!(
            "requests {}  errors {}  non-2xx {}  in {:.1} s  => {:.1} req/s",
            report.requests, report.errors, report.non_2xx, report.duration_s, report.rps
        );
        println!(
            "latency p50 {}  p90 {}  p99 {}  max {}",
            ms(report.p50_ms),
            ms(report.p90_ms),
            ms(report.p99_ms),
            ms(report.max_ms)
        );
        if args.stream {
            println!(
                "ttft    p50 {}  p99 {}",
                ms(report.ttft_p50_ms),
                ms(report.ttft_p99_ms)
            );
        }
    }
    Ok(())
}
