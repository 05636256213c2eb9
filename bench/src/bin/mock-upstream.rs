//! Standalone mock OpenAI-compatible upstream, for benchmarks and manual tests.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use clawdbot_bench::mock::{MockOptions, MockUpstream};

#[derive(Parser, Debug)]
#[command(
    name = "mock-upstream",
    about = "Mock OpenAI-compatible chat completions server"
)]
struct Args {
    /// Address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Assistant reply text.
    #[arg(long)]
    reply: Option<String>,
    /// Delay before each streamed content chunk, in milliseconds (changed
    /// while running by `PUT /mock/chunk-delay-ms` with the new number).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Model name reported by /v1/models and in responses.
    #[arg(long)]
    model: Option<String>,
    /// Tokio worker threads (1 runs a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = builder.enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut opts = MockOptions {
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        ..MockOptions::default()
    };
    if let Some(reply) = args.reply {
        opts.reply = reply;
    }
    if let Some(model) = args.model {
        opts.model = model;
    }
    let mock = MockUpstream::start_on(args.listen, opts).await?;
    {
        // Scripts wait for this exact line, so flush it right away.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", mock.addr())?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    mock.shutdown();
    Ok(())
}
