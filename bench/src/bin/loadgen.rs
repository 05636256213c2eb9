//! Fixed-rate / closed-loop HTTP/1.1 load generator for loopback targets.

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use clawdbot_bench::loadgen::{self, Config, Shape, Target};
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
    #[command(flatten)]
    shape: Shape,
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
    /// Parse SSE responses and report time to first content token.
    #[arg(long)]
    stream: bool,
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
    let mode = args.shape.mode(32)?;
    let (duration, warmup) = args.shape.window()?;
    let cfg = Config {
        target,
        method,
        body,
        headers,
        mode,
        duration,
        warmup,
        stream: args.stream,
        timeout: args.shape.timeout(),
    };
    let report = args.shape.runtime()?.block_on(loadgen::run(cfg))?;

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
