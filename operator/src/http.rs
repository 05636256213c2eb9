//! `:8080`: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::liveness::Liveness;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Probe {
    pub metrics: Arc<Metrics>,
    /// Set once the API server answered and the controller can start.
    pub ready: Arc<AtomicBool>,
    /// Whether the controller still makes progress.
    pub liveness: Arc<Liveness>,
}

pub fn router(p: Probe) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(p)
}

async fn metrics(State(p): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.metrics.render(),
    )
}

async fn healthz(State(p): State<Probe>) -> impl IntoResponse {
    match p.liveness.check() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(why) => {
            tracing::error!(why, "the controller looks stuck: failing /healthz");
            (StatusCode::SERVICE_UNAVAILABLE, format!("stuck: {why}"))
        }
    }
}

async fn readyz(State(p): State<Probe>) -> impl IntoResponse {
    if p.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
