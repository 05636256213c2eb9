//! bot-runtime: the ClawdBot chat server.

pub mod auth;
pub mod chat;
pub mod convlog;
pub mod crypto;
pub mod deliveries;
pub mod http;
pub mod im;
pub mod knowledge;
pub mod llama;
pub mod routes;
pub mod state;
pub mod support;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use clawdbot_config::RuntimeConfig;
use tokio::net::TcpListener;

pub use state::AppState;

/// Serves until `shutdown` resolves, then drains: readiness turns 503 and
/// new API work is refused at once, admitted work gets up to
/// `server.drain_deadline_secs` to finish, then the listener closes.
pub async fn serve<F>(cfg: RuntimeConfig, listener: TcpListener, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Loading a local model reads a file of hundreds of MB: not on a
    // runtime worker.
    let model_cfg = cfg.model.clone();
    let provider = tokio::task::spawn_blocking(move || chat::model::from_config(&model_cfg))
        .await
        .map_err(|e| anyhow::anyhow!("model set-up failed: {e}"))??;
    tracing::info!(
        backend = provider.label(),
        models = ?provider.models(),
        reason = provider.reason(),
        "model backend chosen"
    );
    // Indexing the knowledge base (jieba's dictionary, every phrasing's
    // embedding) is seconds of CPU: not on a runtime worker either.
    let st = tokio::task::spawn_blocking(move || AppState::new(cfg, provider))
        .await
        .map_err(|e| anyhow::anyhow!("start-up failed: {e}"))??;
    serve_state(st, listener, shutdown).await
}

pub async fn serve_state<F>(st: AppState, listener: TcpListener, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let deadline = Duration::from_secs(st.cfg.server.drain_deadline_secs);
    let local = listener.local_addr()?;
    if st.keys.is_open() && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "no API keys are configured and the listener is not loopback: anyone who can reach it \
             may chat and read every conversation; set auth.api_keys (CLAWDBOT_API_KEYS)"
        );
    }
    if st.cfg.server.cors_allowed_origins.iter().any(|o| o == "*") {
        tracing::warn!(
            "server.cors_allowed_origins has \"*\": every website may call this API from its \
             visitors' browsers; list the origins that serve your pages instead"
        );
    }
    let f = &st.cfg.feishu;
    if f.enabled
        && f.mode == clawdbot_config::FeishuMode::Webhook
        && f.encrypt_key.as_ref().is_none_or(|k| k.is_empty())
    {
        tracing::warn!(
            "feishu.allow_unencrypted: Feishu events arrive in plaintext, proven only by the \
             verification token in their body and never refused as replays; set feishu.encrypt_key"
        );
    }
    let metrics = match &st.cfg.server.metrics_listen {
        Some(addr) => Some(serve_metrics(st.clone(), addr).await?),
        None => None,
    };
    st.logs.start();
    st.knowledge.clone().watch(
        Duration::from_secs(st.cfg.knowledge.reload_secs),
        st.drain.token(),
    );
    let retention = st
        .cfg
        .logs
        .retention_days
        .map(|days| convlog::retention::spawn(st.logs.store().clone(), days));
    let sweeper = spawn_sweeper(st.clone());
    let channels = start_channels(&st, deadline);
    let app = routes::router(st.clone());
    let drained = {
        let st = st.clone();
        async move {
            shutdown.await;
            st.drain.start();
            tracing::info!(in_flight = st.drain.in_flight(), "draining");
            let left = st.drain.wait_idle(deadline).await;
            if left > 0 {
                tracing::warn!(
                    in_flight = left,
                    "drain deadline passed; closing with work in flight"
                );
            }
        }
    };
    // TCP_NODELAY: a streamed reply is many small writes, and Nagle would
    // hold each one until the client acknowledged the one before.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(drained);
    // Connections still open after the drain (idle keep-alives, cut streams)
    // get a moment to close, not forever.
    let result = tokio::select! {
        r = server => r.map_err(anyhow::Error::from),
        _ = async {
            st.drain.started().await;
            st.drain.wait_idle(deadline).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => Ok(()),
    };
    sweeper.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    // IM answers in progress had the HTTP drain's time to finish too; the
    // worker pool gives them what is left, then hands the rest over.
    channels
        .stop(deadline.saturating_sub(st.drain.draining_for().unwrap_or_default()))
        .await;
    // After the HTTP drain no new exchanges arrive; the log writer gets what
    // is left of the drain deadline (at least 2 s) to empty its queue, and
    // spills the rest for the next start.
    let spent = st.drain.draining_for().unwrap_or_default();
    st.logs
        .drain(deadline.saturating_sub(spent).max(Duration::from_secs(2)))
        .await;
    tracing::info!("stopped");
    result
}

/// The `/metrics` listener of `server.metrics_listen`, serving until the
/// main server is done (Prometheus may still scrape a draining pod).
async fn serve_metrics(st: AppState, addr: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.metrics_listen): {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics served here, not on the main port");
    let app = routes::metrics_router(st);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    }))
}

/// Background work of the IM channels: delivery workers, long connections,
/// notification senders, dedupe-key pruning.
struct ChannelTasks {
    workers: Option<tokio::task::JoinHandle<()>>,
    others: Vec<tokio::task::JoinHandle<()>>,
    stop_clients: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl ChannelTasks {
    async fn stop(self, left: Duration) {
        let _ = self.stop_clients.send(true);
        // Let the clients close their connections cleanly.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(w) = self.workers {
            // The pool stops by itself on drain; give it the time left.
            let _ = tokio::time::timeout(left + Duration::from_secs(1), w).await;
        }
        for t in self.others {
            t.abort();
        }
    }
}

fn start_channels(st: &AppState, deadline: Duration) -> ChannelTasks {
    let (stop_clients, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = ChannelTasks {
        workers: None,
        others: Vec::new(),
        stop_clients: std::sync::Arc::new(stop_clients),
    };
    // Robots notify whether or not their platform's app channel answers.
    let _ = st.notifier.set(im::notify::Notifier::start(
        st.outbound.clone(),
        st.cfg.channels.notify_queue,
        &st.metrics,
    ));
    if !st.channels_enabled() {
        return tasks;
    }
    let answerer = std::sync::Arc::new(deliveries::Answerer::new(
        st.cfg.model.clone(),
        st.cfg.sessions.max_message_bytes,
        st.bot.clone(),
        st.sessions.clone(),
        st.logs.clone(),
        st.outbound.clone(),
        &st.metrics,
    ));
    tasks.workers = Some(tokio::spawn(st.deliveries.clone().run(
        answerer,
        st.drain.token(),
        deadline,
    )));
    let deliveries = st.deliveries.clone();
    tasks.others.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            deliveries.prune().await;
        }
    }));
    tasks.others.extend(im::long_connections(
        &st.cfg,
        st.deliveries.clone(),
        &st.metrics.webhook_requests,
        stop_rx,
    ));
    // Long connections stop taking deliveries as soon as the drain starts.
    let (st2, stop) = (st.clone(), tasks.stop_clients.clone());
    tasks.others.push(tokio::spawn(async move {
        st2.drain.started().await;
        let _ = stop.send(true);
    }));
    tasks
}

/// Now and then: idle sessions and rate-limit entries go.
fn spawn_sweeper(st: AppState) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs((st.cfg.sessions.ttl_secs / 4).clamp(1, 60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let gone = st.sessions.sweep();
            if gone > 0 {
                tracing::debug!(expired = gone, "expired idle sessions");
            }
            st.limiter.forget_idle();
        }
    })
}
