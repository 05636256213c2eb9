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

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

#[derive(Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    ttft_ns: Vec<u64>,
    responses: u64,
    non_2xx: u64,
    errors: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latencies_ns.extend(o.latencies_ns);
        self.ttft_ns.extend(o.ttft_ns);
        self.responses += o.responses;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
    }
}

/// Run the load described by `cfg`; must be called inside a tokio runtime.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
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
    });
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(plan.clone())))
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        stats.merge(w.await.context("worker panicked")?);
    }
    Ok(report(stats, plan.cfg.duration))
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
        let (start, record) = match plan.cfg.mode {
            Mode::Rate { .. } => {
                let slot = plan.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = plan.t0 + plan.interval.mul_f64(slot as f64);
                if due >= plan.end {
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
                (start, record)
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
                (now, now >= plan.measure_from)
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
        let limit = (start + plan.cfg.timeout).min(deadline_all);
        let outcome =
            tokio::time::timeout_at(limit.into(), one_request(tx, &plan.cfg, start)).await;
        match outcome {
            Ok(Ok(done)) => {
                if record {
                    stats.responses += 1;
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
    total: Duration,
    ttft: Option<Duration>,
    reusable: bool,
}

async fn one_request(tx: &mut Sender, cfg: &Config, start: Instant) -> anyhow::Result<Done> {
    let mut req = Request::builder()
        .method(cfg.method.clone())
        .uri(cfg.target.path_and_query.as_str())
        .header(HOST, cfg.target.host.as_str());
    if !cfg.body.is_empty() && !cfg.headers.iter().any(|(k, _)| k == CONTENT_TYPE) {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    for (k, v) in &cfg.headers {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(cfg.body.clone()))?;
    tx.ready().await?;
    let resp = tx.send_request(req).await?;
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
