//! Load generator for bot-runtime's IM webhooks: pre-builds distinct signed
//! DingTalk callbacks and/or encrypted, signed Feishu events, then sends them
//! at a fixed rate or in a closed loop (the `loadgen` engine, loopback only).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use clawdbot_bench::im::{self, Setup};
use clawdbot_bench::loadgen::{self, Config, Mode, PoolUse, Prepared, Report, Shape, Target};
use hyper::Method;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Platform {
    Dingtalk,
    Feishu,
    /// Alternating DingTalk and Feishu deliveries.
    Mixed,
}

#[derive(Parser, Debug)]
#[command(
    name = "webhook-load",
    about = "IM webhook load generator: signed DingTalk / encrypted Feishu deliveries (loopback targets only)",
    long_about = "Pre-builds distinct deliveries (unique msgId / event_id and message_id, \
        signed with the current time; Feishu events AES-256-CBC encrypted with a random IV and \
        signed with a random nonce), then POSTs each once to /webhooks/dingtalk or \
        /webhooks/feishu of --url. Building is not timed.\n\n\
        JSON: the loadgen fields (requests, errors, non_2xx, duration_s, rps, p50/p90/p99/max_ms: \
        request to the ack's last byte), statuses (HTTP status -> count in the window), platform, \
        build_ms, pool {built, sent, ok, exhausted} (sent/ok include the warm-up)."
)]
struct Args {
    #[command(flatten)]
    shape: Shape,
    /// bot-runtime base URL, e.g. http://127.0.0.1:8080 (its path is ignored).
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    platform: Platform,
    /// Deliveries to pre-build. Default: enough for --rate over warm-up and
    /// window; closed loop: --closed-rate-cap deliveries per second of it.
    #[arg(long)]
    pool: Option<u64>,
    /// Closed loop: the highest rate the default pool covers; a faster
    /// target ends the run early (reported as `pool.exhausted`).
    #[arg(long, default_value_t = 40_000.0)]
    closed_rate_cap: f64,
    /// DingTalk AppSecret (signs `sign`).
    #[arg(
        long,
        env = "BENCH_DINGTALK_APP_SECRET",
        default_value = "bench-dingtalk-app-secret"
    )]
    dingtalk_secret: String,
    #[arg(long, default_value = "dingbenchrobot")]
    dingtalk_robot_code: String,
    /// Feishu encrypt key.
    #[arg(
        long,
        env = "BENCH_FEISHU_ENCRYPT_KEY",
        default_value = "bench-feishu-encrypt-key"
    )]
    feishu_encrypt_key: String,
    /// Feishu verification token (`header.token`).
    #[arg(
        long,
        env = "BENCH_FEISHU_TOKEN",
        default_value = "bench-feishu-verification-token"
    )]
    feishu_token: String,
    #[arg(long, default_value = "cli_bench")]
    feishu_app_id: String,
    /// Base URL DingTalk's `sessionWebhook` points at (the reply sink).
    #[arg(long)]
    sink: String,
    /// Distinct users / conversations the deliveries cycle through.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output {
    platform: Platform,
    #[serde(flatten)]
    report: Report,
    build_ms: f64,
    pool: PoolUse,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = Target::parse(&args.url)?;
    let mode = args.shape.mode(64)?;
    let (duration, warmup) = args.shape.window()?;
    let span = args.shape.duration_secs + args.shape.warmup_secs;
    let pool_size = args.pool.unwrap_or_else(|| match mode {
        // The schedule's slots, plus one extra second.
        Mode::Rate { rps, .. } => ((span + 1.0) * rps).ceil() as u64,
        Mode::Closed { connections } => {
            (span * args.closed_rate_cap).ceil() as u64 + connections as u64
        }
    });

    let setup = Setup {
        dingtalk_secret: args.dingtalk_secret.clone(),
        dingtalk_robot_code: args.dingtalk_robot_code.clone(),
        feishu_encrypt_key: args.feishu_encrypt_key.clone(),
        feishu_token: args.feishu_token.clone(),
        feishu_app_id: args.feishu_app_id.clone(),
        sink_base: args.sink.trim_end_matches('/').to_owned(),
        users: args.users,
        run_id: format!("{:08x}", rand::random::<u32>()),
    };
    let built = Instant::now();
    let pool: Arc<[Prepared]> = (0..pool_size)
        .map(|i| match args.platform {
            Platform::Dingtalk => im::dingtalk_delivery(&setup, i),
            Platform::Feishu => im::feishu_delivery(&setup, i),
            Platform::Mixed if i % 2 == 0 => im::dingtalk_delivery(&setup, i),
            Platform::Mixed => im::feishu_delivery(&setup, i),
        })
        .collect();
    let build_ms = (built.elapsed().as_secs_f64() * 1e6).round() / 1e3;

    let cfg = Config {
        target,
        method: Method::POST,
        body: Bytes::new(),
        headers: Vec::new(),
        mode,
        duration,
        warmup,
        stream: false,
        timeout: args.shape.timeout(),
    };
    let (report, pool) = args
        .shape
        .runtime()?
        .block_on(loadgen::run_each(cfg, pool))?;
    let out = Output {
        platform: args.platform,
        report,
        build_ms,
        pool,
    };

    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let r = &out.report;
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} ms"));
        println!(
            "{:?}: built {} deliveries in {:.0} ms; sent {} ({} 2xx){}",
            out.platform,
            out.pool.built,
            out.build_ms,
            out.pool.sent,
            out.pool.ok,
            if out.pool.exhausted {
                ", pool exhausted: window cut short"
            } else {
                ""
            }
        );
        println!(
            "window: responses {}  errors {}  non-2xx {}  statuses {:?}  in {:.2} s  => {:.1} deliveries/s",
            r.requests,
            r.errors,
            r.non_2xx,
            r.statuses.clone().unwrap_or_default(),
            r.duration_s,
            r.rps
        );
        println!(
            "ack latency p50 {}  p90 {}  p99 {}  max {}",
            ms(r.p50_ms),
            ms(r.p90_ms),
            ms(r.p99_ms),
            ms(r.max_ms)
        );
    }
    Ok(())
}
