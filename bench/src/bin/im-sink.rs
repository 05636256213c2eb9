//! Stand-in for the DingTalk and Feishu APIs bot-runtime answers through,
//! for benchmarks: every call succeeds at once. Serves
//!
//! - `POST /v1.0/oauth2/accessToken` -> `{"accessToken":"t","expireIn":7200}`
//! - `POST /open-apis/auth/v3/tenant_access_token/internal` -> `{"code":0,"tenant_access_token":"t","expire":7200}`
//! - `POST /open-apis/im/v1/messages/{id}/reply` -> `{"code":0,...}`
//! - `POST /robot/sendBySession...` (DingTalk's `sessionWebhook`) -> `{"errcode":0,"errmsg":"ok"}`
//! - `GET /stats` -> requests served so far, by kind
//! - anything else -> `{"code":0,"errcode":0}`
//!
//! Prints `listening on http://ADDR` once bound; SIGTERM stops it.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "im-sink",
    about = "Answers DingTalk / Feishu reply and token calls at once (benchmarks)"
)]
struct Args {
    /// Address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Default)]
struct Counts {
    dingtalk_token: AtomicU64,
    dingtalk_session_webhook: AtomicU64,
    feishu_token: AtomicU64,
    feishu_reply: AtomicU64,
    other: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let counts = Arc::new(Counts::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(counts.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = term.recv() => return Ok(()),
            r = tokio::signal::ctrl_c() => return r.map_err(Into::into),
        }
    }
}

async fn handle(
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    // Read the whole request, as a real API would.
    let _ = req.into_body().collect().await;
    let (counter, body): (Option<&AtomicU64>, String) = if path == "/v1.0/oauth2/accessToken" {
        (
            Some(&counts.dingtalk_token),
            r#"{"accessToken":"bench-token","expireIn":7200}"#.into(),
        )
    } else if path == "/open-apis/auth/v3/tenant_access_token/internal" {
        (
            Some(&counts.feishu_token),
            r#"{"code":0,"msg":"ok","tenant_access_token":"bench-token","expire":7200}"#.into(),
        )
    } else if path.starts_with("/open-apis/im/v1/messages/") && path.ends_with("/reply") {
        (
            Some(&counts.feishu_reply),
            r#"{"code":0,"msg":"success","data":{}}"#.into(),
        )
    } else if path.starts_with("/robot/sendBySession") {
        (
            Some(&counts.dingtalk_session_webhook),
            r#"{"errcode":0,"errmsg":"ok"}"#.into(),
        )
    } else if path == "/stats" {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            None,
            serde_json::json!({
                "dingtalk_token": n(&counts.dingtalk_token),
                "dingtalk_session_webhook": n(&counts.dingtalk_session_webhook),
                "feishu_token": n(&counts.feishu_token),
                "feishu_reply": n(&counts.feishu_reply),
                "other": n(&counts.other),
            })
            .to_string(),
        )
    } else {
        (Some(&counts.other), r#"{"code":0,"errcode":0}"#.into())
    };
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
