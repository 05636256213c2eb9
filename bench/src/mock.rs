//! Mock OpenAI-compatible upstream: scripted behaviours for tests, and a
//! lean baseline server for benchmarks (raw hyper, no router, one lock per
//! request).

mod wire;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// Static configuration of a [`MockUpstream`].
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Assistant reply text for `Behavior::Ok`.
    pub reply: String,
    /// Sleep before each streamed content chunk.
    pub chunk_delay: Duration,
    /// Model name for `/v1/models` and for responses when the request names none.
    pub model: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            reply: "Hello from the mock upstream.".to_owned(),
            chunk_delay: Duration::ZERO,
            model: "mock-model".to_owned(),
        }
    }
}

/// What the mock does with one chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Normal completion with the configured reply.
    Ok,
    /// Answer with this HTTP status and an OpenAI-shaped error body.
    Status(u16),
    /// Wait this long, then behave like `Ok`.
    Slow(Duration),
    /// Never answer; the connection is held open.
    Hang,
    /// Like `Ok`, with this reply text.
    Reply(String),
    /// Streaming: send the role chunk and one content chunk, then drop the
    /// connection without `[DONE]`. Non-streaming: drop the connection
    /// without a response.
    FailMidStream,
}

struct Script {
    queue: VecDeque<Behavior>,
    default: Behavior,
    last_body: Option<Bytes>,
    last_authorization: Option<String>,
}

struct Shared {
    reply: String,
    model: String,
    chunk_delay_ns: AtomicU64,
    script: Mutex<Script>,
    requests: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_cancelled: AtomicUsize,
    next_id: AtomicU64,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A panicking test thread must not wedge the server.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running mock upstream. Dropping it stops the server and closes every
/// connection it holds.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Serve on an ephemeral port of 127.0.0.1.
    pub async fn start(opts: MockOptions) -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), opts).await
    }

    /// Serve on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr, opts: MockOptions) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            reply: opts.reply,
            model: opts.model,
            chunk_delay_ns: AtomicU64::new(duration_ns(opts.chunk_delay)),
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: Behavior::Ok,
                last_body: None,
                last_authorization: None,
            }),
            requests: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_cancelled: AtomicUsize::new(0),
            next_id: AtomicU64::new(seed),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(MockUpstream { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue a behaviour for the next chat request (FIFO).
    pub fn push(&self, b: Behavior) {
        self.shared.script().queue.push_back(b);
    }

    /// Behaviour used once the queue is empty (initially `Ok`).
    pub fn set_default(&self, b: Behavior) {
        self.shared.script().default = b;
    }

    /// Applies to streams that start after the call.
    pub fn set_chunk_delay(&self, d: Duration) {
        self.shared
            .chunk_delay_ns
            .store(duration_ns(d), Ordering::Relaxed);
    }

    /// Number of `POST /v1/chat/completions` received.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// JSON body of the latest chat request (`None` if none yet or not JSON).
    pub fn last_request(&self) -> Option<serde_json::Value> {
        let body = self.shared.script().last_body.clone()?;
        serde_json::from_slice(&body).ok()
    }

    /// `Authorization` header of the latest chat request.
    pub fn last_authorization(&self) -> Option<String> {
        self.shared.script().last_authorization.clone()
    }

    /// Streaming bodies sent through `[DONE]`.
    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// Streaming bodies dropped before the end because the client went away.
    /// `FailMidStream` aborts count in neither counter.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Poll `f` every 5 ms until it holds or `timeout` passes.
    pub async fn wait_for<F: Fn(&MockUpstream) -> bool>(&self, f: F, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if f(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop serving and close every connection (same as dropping).
    pub fn shutdown(self) {}
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The connection JoinSet lives in this task, so aborting it also
        // closes held (e.g. `Hang`) connections.
        self.task.abort();
    }
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, shared.clone()));
                }
                // Out of fds and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>) {
    // Small SSE writes must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path();
    let resp = match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            return Ok(chat(shared, req).await);
        }
        (&Method::GET, "/v1/models" | "/models") => {
            json_response(StatusCode::OK, wire::models(&shared.model))
        }
        // Test control for processes outside this one (the mock-upstream
        // binary): the chunk delay, hence the time to first token.
        (&Method::PUT, CHUNK_DELAY_PATH) => return Ok(set_chunk_delay(&shared, req).await),
        _ => error_response(StatusCode::NOT_FOUND, Some("unknown path")),
    };
    Ok(resp)
}

/// `PUT` a number of milliseconds here to change the delay before each
/// streamed content chunk of streams that start afterwards.
pub const CHUNK_DELAY_PATH: &str = "/mock/chunk-delay-ms";

async fn set_chunk_delay(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(StatusCode::BAD_REQUEST, Some("unreadable body")),
    };
    match std::str::from_utf8(&body)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(ms) => {
            shared
                .chunk_delay_ns
                .store(duration_ns(Duration::from_millis(ms)), Ordering::Relaxed);
            json_response(
                StatusCode::OK,
                format!("{{\"chunk_delay_ms\":{ms}}}").into_bytes(),
            )
        }
        None => error_response(
            StatusCode::BAD_REQUEST,
            Some("the body must be a number of milliseconds"),
        ),
    }
}

async fn chat(shared: Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(StatusCode::BAD_REQUEST, Some("unreadable body")),
    };
    let behavior = {
        let mut s = shared.script();
        s.last_body = Some(body.clone());
        s.last_authorization = auth;
        // Counted only once the body is recorded, so a test that waits on
        // requests() then reads last_request() sees this request.
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let next = s.queue.pop_front();
        next.unwrap_or_else(|| s.default.clone())
    };

    let reply = match behavior {
        Behavior::Ok => None,
        Behavior::Reply(text) => Some(text),
        Behavior::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(status, None);
        }
        Behavior::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Behavior::Hang => std::future::pending().await,
        Behavior::FailMidStream => {
            return respond_chat(&shared, &body, None, true);
        }
    };
    respond_chat(&shared, &body, reply.as_deref(), false)
}

fn respond_chat(
    shared: &Arc<Shared>,
    body: &[u8],
    reply: Option<&str>,
    fail_mid_stream: bool,
) -> Response<MockBody> {
    let parsed: wire::ChatRequest = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Some(&format!(
                    "We could not parse the JSON body of your request: {e}"
                )),
            );
        }
    };
    let reply = reply.unwrap_or(&shared.reply);
    let model = parsed
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(&shared.model);
    let meta = wire::Meta {
        id: format!(
            "chatcmpl-{:016x}",
            shared.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model,
    };
    let prompt_tokens = parsed.prompt_words();
    let completion_tokens = reply.split_whitespace().count();

    if parsed.stream.unwrap_or(false) {
        let include_usage = parsed
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let frames = wire::stream_frames(
            &meta,
            reply,
            include_usage,
            (prompt_tokens, completion_tokens),
            fail_mid_stream,
        );
        let delay = Duration::from_nanos(shared.chunk_delay_ns.load(Ordering::Relaxed));
        let sse = SseBody {
            frames: frames.into(),
            delay,
            sleep: None,
            fail_at_end: fail_mid_stream,
            guard: StreamGuard {
                shared: shared.clone(),
                outcome: Outcome::Unfinished,
            },
        };
        let mut resp = Response::new(MockBody::Sse(Box::new(sse)));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }
    if fail_mid_stream {
        return Response::new(MockBody::Abort);
    }
    json_response(
        StatusCode::OK,
        wire::completion(&meta, reply, prompt_tokens, completion_tokens),
    )
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Full(Some(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: StatusCode, message: Option<&str>) -> Response<MockBody> {
    json_response(status, wire::error(status.as_u16(), message))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unfinished,
    Completed,
    Aborted,
}

/// Lives inside the SSE body, so its drop tells whether hyper sent the whole
/// stream or dropped it early (client gone).
struct StreamGuard {
    shared: Arc<Shared>,
    outcome: Outcome,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = match self.outcome {
            Outcome::Completed => &self.shared.streams_completed,
            Outcome::Unfinished => &self.shared.streams_cancelled,
            Outcome::Aborted => return,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// Pre-rendered SSE events; content chunks wait `delay` first.
struct SseBody {
    frames: VecDeque<(bool, Bytes)>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    fail_at_end: bool,
    guard: StreamGuard,
}

impl SseBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, MockAbort>>> {
        let Some((delayed, _)) = self.frames.front() else {
            if self.fail_at_end {
                // Pause first so hyper flushes what was sent; erroring right
                // away would discard its buffered writes.
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(5))));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.guard.outcome = Outcome::Aborted;
                return Poll::Ready(Some(Err(MockAbort)));
            }
            self.guard.outcome = Outcome::Completed;
            return Poll::Ready(None);
        };
        // No timer at all for a zero delay: tokio would round it up to a tick.
        if *delayed && !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let (_, bytes) = self.frames.pop_front().expect("front checked above");
        Poll::Ready(Some(Ok(bytes)))
    }
}

/// Error that makes hyper drop the connection mid-body.
#[derive(Debug)]
pub(crate) struct MockAbort;

impl std::fmt::Display for MockAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock upstream aborted the response")
    }
}

impl std::error::Error for MockAbort {}

enum MockBody {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
    /// Fails on first poll: the client sees the connection close.
    Abort,
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = MockAbort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MockAbort>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Sse(s) => s.poll_next(cx).map(|o| o.map(|r| r.map(Frame::data))),
            MockBody::Abort => Poll::Ready(Some(Err(MockAbort))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // Exact size gives a content-length header, as OpenAI sends.
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
