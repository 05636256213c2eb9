//! HTTP/1.1 load generator for loopback targets: fixed-rate (open loop) and
//! closed-loop max-throughput modes over a pool of keep-alive connections.
//!
//! Fixed rate: request `i` is due at `t0 + i / rate`. A free connection
//! claims the next due slot; if that slot is already past (every connection
//! was busy, so the server is behind) latency counts from the due time, so a
//! slow server cannot hide its backlog (no coordinated omission). If the
//! connection was free and only waited for the generator's own 1 ms timer,
//! latency counts from the actual send, so timer slop is not charged to the
//! server.
//!
//! [`run_each`] sends a pre-built pool of distinct requests instead of one
//! body: request `i` (slot `i` at a fixed rate, the `i`-th sent in a closed
//! loop) is pool item `i`, so building them (signing, encrypting) is not
//! measured. A pool that runs out ends the run early; the report then covers
//! the window up to that moment and says so.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// A parsed `http://host:port/path` URL that points at this machine.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path_and_query: String,
}

impl Target {
    /// Only plain HTTP to loopback addresses: this tool must never load
    /// anything but a local server.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .context("only http:// URLs are supported")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            bail!("bad host in {url}");
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .find(|a| a.ip().is_loopback())
            .with_context(|| format!("{authority} is not a loopback address"))?;
        Ok(Target {
            addr,
            host: authority.to_owned(),
            path_and_query: path.to_owned(),
        })
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Open loop at this many requests per second, over `connections`.
    Rate { rps: f64, connections: usize },
    /// Each of `connections` sends its next request as soon as the last ended.
    Closed { connections: usize },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub method: Method,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub mode: Mode,
    pub duration: Duration,
    pub warmup: Duration,
    /// Parse SSE bodies and measure time to the first content delta.
    pub stream: bool,
    /// Per-request limit; an unanswered request then counts as an error.
    pub timeout: Duration,
}

/// Results over the measured window (warm-up excluded). `requests` counts
/// HTTP responses of any status; `rps` and the latency figures cover 2xx
/// responses only.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    /// HTTP status -> responses in the window ([`run_each`] only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<BTreeMap<u16, u64>>,
}

/// One request of a pre-built pool: its own path (on the target's host),
/// body and headers (`Config::body`, `headers` and the target's path are not
/// used for it).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// How [`run_each`] used its pool, warm-up included.
#[derive(Debug, Clone, Serialize)]
pub struct PoolUse {
    /// Items in the pool.
    pub built: u64,
    /// Requests sent (each a distinct item).
    pub sent: u64,
    /// 2xx responses to them.
    pub ok: u64,
    /// The pool ran out before the window closed; the report covers the
    /// window up to then.
    pub exhausted: bool,
}

/// Stop waiting for stragglers this long after the window closes.
const GRACE: Duration = Duration::from_secs(2);

struct Plan {
    cfg: Config,
    t0: Instant,
    measure_from: Instant,
    end: Instant,
    next_slot: AtomicU64,
    interval: Duration,
    pool: Option<Arc<[Prepared]>>,
    /// When some worker found the pool empty.
    exhausted_at: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    ttft_ns: Vec<u64>,
    responses: u64,
    non_2xx: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    sent_all: u64,
    ok_all: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latencies_ns.extend(o.latencies_ns);
        self.ttft_ns.extend(o.ttft_ns);
        self.responses += o.responses;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.sent_all += o.sent_all;
        self.ok_all += o.ok_all;
    }
}

/// Run the load described by `cfg`; must be called inside a tokio runtime.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    run_inner(cfg, None).await.map(|(r, _)| r)
}

/// Like [`run`], each request being the next item of `pool` (see the module
/// docs). The report adds the status counts.
pub async fn run_each(cfg: Config, pool: Arc<[Prepared]>) -> anyhow::Result<(Report, PoolUse)> {
    if pool.is_empty() {
        bail!("the request pool is empty");
    }
    run_inner(cfg, Some(pool)).await
}

async fn run_inner(
    cfg: Config,
    pool: Option<Arc<[Prepared]>>,
) -> anyhow::Result<(Report, PoolUse)> {
    let (connections, interval) = match cfg.mode {
        Mode::Rate { rps, connections } => {
            if !(rps > 0.0 && rps.is_finite()) {
                bail!("rate must be a positive number");
            }
            (connections, Duration::from_secs_f64(1.0 / rps))
        }
        Mode::Closed { connections } => (connections, Duration::ZERO),
    };
    if connections == 0 {
        bail!("need at least one connection");
    }
    // Fail fast on a dead target instead of reporting a run of errors.
    TcpStream::connect(cfg.target.addr)
        .await
        .with_context(|| format!("connecting to {}", cfg.target.addr))?;

    // Give every worker time to connect before the first slot is due.
    let t0 = Instant::now() + Duration::from_millis(100);
    let measure_from = t0 + cfg.warmup;
    let end = measure_from + cfg.duration;
    let plan = Arc::new(Plan {
        cfg,
        t0,
        measure_from,
        end,
        next_slot: AtomicU64::new(0),
        interval,
        pool,
        exhausted_at: Mutex::new(None),
    });
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(plan.clone())))
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        stats.merge(w.await.context("worker panicked")?);
    }
    let exhausted_at = *plan.exhausted_at.lock().unwrap_or_else(|e| e.into_inner());
    let window = match exhausted_at {
        Some(t) if t < plan.end => {
            if t <= plan.measure_from {
                bail!("the request pool ran out during the warm-up; build a larger one");
            }
            t - plan.measure_from
        }
        _ => plan.cfg.duration,
    };
    let pool_use = PoolUse {
        built: plan.pool.as_ref().map_or(0, |p| p.len() as u64),
        sent: stats.sent_all,
        ok: stats.ok_all,
        exhausted: exhausted_at.is_some_and(|t| t < plan.end),
    };
    let mut r = report(stats, window);
    if plan.pool.is_none() {
        r.statuses = None;
    }
    Ok((r, pool_use))
}

fn report(mut s: Stats, window: Duration) -> Report {
    s.latencies_ns.sort_unstable();
    s.ttft_ns.sort_unstable();
    let duration_s = window.as_secs_f64();
    Report {
        requests: s.responses,
        errors: s.errors,
        non_2xx: s.non_2xx,
        duration_s,
        rps: round3((s.responses - s.non_2xx) as f64 / duration_s),
        p50_ms: percentile_ms(&s.latencies_ns, 0.50),
        p90_ms: percentile_ms(&s.latencies_ns, 0.90),
        p99_ms: percentile_ms(&s.latencies_ns, 0.99),
        max_ms: percentile_ms(&s.latencies_ns, 1.0),
        ttft_p50_ms: percentile_ms(&s.ttft_ns, 0.50),
        ttft_p99_ms: percentile_ms(&s.ttft_ns, 0.99),
        statuses: Some(s.statuses),
    }
}

/// Nearest-rank percentile of sorted nanosecond samples, in ms.
pub fn percentile_ms(sorted_ns: &[u64], q: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let rank = (q * sorted_ns.len() as f64).ceil() as usize;
    let v = sorted_ns[rank.clamp(1, sorted_ns.len()) - 1];
    Some(round3(v as f64 / 1e6))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Plan {
    fn mark_exhausted(&self, at: Instant) {
        let mut e = self.exhausted_at.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none_or(|t| at < t) {
            *e = Some(at);
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

async fn worker(plan: Arc<Plan>) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<Sender> = None;
    let deadline_all = plan.end + GRACE;
    let addr = plan.cfg.target.addr;
    if let Ok(c) = connect(addr).await {
        conn = Some(c);
    }
    loop {
        let (start, record, slot) = match plan.cfg.mode {
            Mode::Rate { .. } => {
                let slot = plan.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = plan.t0 + plan.interval.mul_f64(slot as f64);
                if due >= plan.end {
                    break;
                }
                if plan.pool.as_ref().is_some_and(|p| slot >= p.len() as u64) {
                    plan.mark_exhausted(due);
                    break;
                }
                let record = due >= plan.measure_from;
                let now = Instant::now();
                if now >= deadline_all {
                    // Generator backlog past the grace period: never sent.
                    stats.errors += u64::from(record);
                    continue;
                }
                let start = if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                (start, record, Some(slot))
            }
            Mode::Closed { .. } => {
                let now = Instant::now();
                if now < plan.t0 {
                    tokio::time::sleep_until(plan.t0.into()).await;
                    continue;
                }
                if now >= plan.end {
                    break;
                }
                (now, now >= plan.measure_from, None)
            }
        };

        let tx = match conn.as_mut().filter(|c| !c.is_closed()) {
            Some(tx) => tx,
            None => match connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    stats.errors += u64::from(record);
                    conn = None;
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let item = match &plan.pool {
            None => None,
            Some(pool) => {
                // Closed loop: the next item in sending order.
                let i = slot.unwrap_or_else(|| plan.next_slot.fetch_add(1, Ordering::Relaxed));
                match pool.get(i as usize) {
                    Some(item) => Some(item),
                    None => {
                        plan.mark_exhausted(Instant::now());
                        break;
                    }
                }
            }
        };
        let limit = (start + plan.cfg.timeout).min(deadline_all);
        stats.sent_all += 1;
        let outcome =
            tokio::time::timeout_at(limit.into(), one_request(tx, &plan.cfg, item, start)).await;
        match outcome {
            Ok(Ok(done)) => {
                stats.ok_all += u64::from(done.ok);
                if record {
                    stats.responses += 1;
                    *stats.statuses.entry(done.status).or_default() += 1;
                    if done.ok {
                        stats.latencies_ns.push(nanos(done.total));
                        if let Some(t) = done.ttft {
                            stats.ttft_ns.push(nanos(t));
                        }
                    } else {
                        stats.non_2xx += 1;
                    }
                }
                if !done.reusable {
                    conn = None;
                }
            }
            Ok(Err(_)) | Err(_) => {
                stats.errors += u64::from(record);
                conn = None;
            }
        }
    }
    stats
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct Done {
    ok: bool,
    status: u16,
    total: Duration,
    ttft: Option<Duration>,
    reusable: bool,
}

async fn one_request(
    tx: &mut Sender,
    cfg: &Config,
    item: Option<&Prepared>,
    start: Instant,
) -> anyhow::Result<Done> {
    let (path, body, headers) = match item {
        Some(p) => (p.path.as_str(), &p.body, &p.headers),
        None => (cfg.target.path_and_query.as_str(), &cfg.body, &cfg.headers),
    };
    let mut req = Request::builder()
        .method(cfg.method.clone())
        .uri(path)
        .header(HOST, cfg.target.host.as_str());
    if !body.is_empty() && !headers.iter().any(|(k, _)| k == CONTENT_TYPE) {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(body.clone()))?;
    tx.ready().await?;
    let resp = tx.send_request(req).await?;
    let status = resp.status().as_u16();
    let ok = resp.status().is_success();
    let reusable = !resp
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = resp.into_body();
    let mut ttft = None;
    let mut sse = (cfg.stream && ok).then(SseScan::default);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let (Some(scan), Some(data)) = (sse.as_mut(), frame.data_ref())
            && scan.feed(data)
        {
            ttft = Some(start.elapsed());
            sse = None;
        }
    }
    Ok(Done {
        ok,
        status,
        total: start.elapsed(),
        ttft,
        reusable,
    })
}

/// Finds the first SSE `data:` event whose `choices[0].delta.content` is a
/// non-empty string.
#[derive(Default)]
pub struct SseScan {
    buf: BytesMut,
}

impl SseScan {
    /// Feed body bytes; true once the first content delta has arrived.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        self.buf.extend_from_slice(data);
        while let Some((len, sep)) = event_end(&self.buf) {
            let event = self.buf.split_to(len + sep);
            if event_has_content(&event[..len]) {
                return true;
            }
        }
        false
    }
}

fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn event_has_content(event: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(event) else {
        return false;
    };
    // Multi-line data fields join with '\n' per the SSE spec.
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return false;
    }
    let payload = data.join("\n");
    if payload.trim() == "[DONE]" {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(&payload)
        .ok()
        .and_then(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .map(|c| !c.is_empty())
        })
        .unwrap_or(false)
}

/// Parse a `Name: value` header argument.
pub fn parse_header(s: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (k, v) = s
        .split_once(':')
        .with_context(|| format!("header {s:?} is not 'Name: value'"))?;
    Ok((
        HeaderName::from_bytes(k.trim().as_bytes())?,
        HeaderValue::from_str(v.trim())?,
    ))
}

/// The load shape both load generators take on the command line: open loop
/// at `--rate` or closed loop over `--connections`, a warm-up, a measured
/// window, the per-request timeout and the runtime's threads.
#[derive(Debug, Clone, clap::Args)]
pub struct Shape {
    /// Fixed request rate (open loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections: the pool for --rate (default: the tool's), or the
    /// closed-loop concurrency without --rate.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured window in seconds.
    #[arg(long)]
    pub duration_secs: f64,
    /// Load before the window that is not measured.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Tokio worker threads (1 runs a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Shape {
    /// Open loop when `--rate` is given (on `default_connections` unless
    /// `--connections` says otherwise), else closed loop.
    pub fn mode(&self, default_connections: usize) -> anyhow::Result<Mode> {
        Ok(match (self.rate, self.connections) {
            (Some(rps), c) => Mode::Rate {
                rps,
                connections: c.unwrap_or(default_connections),
            },
            (None, Some(connections)) => Mode::Closed { connections },
            (None, None) => bail!("give --rate or --connections"),
        })
    }

    /// The measured window and the warm-up; the window must not be empty.
    pub fn window(&self) -> anyhow::Result<(Duration, Duration)> {
        let secs = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s).with_context(|| format!("bad {what}: {s}"))
        };
        let duration = secs(self.duration_secs, "--duration-secs")?;
        if duration.is_zero() {
            bail!("--duration-secs must be > 0");
        }
        Ok((duration, secs(self.warmup_secs, "--warmup-secs")?))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// A current-thread runtime for 1 thread, else a multi-thread one.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut b = if self.threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(self.threads);
            b
        };
        b.enable_all().build()
    }
}
