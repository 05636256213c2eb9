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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn healthz(liveness: Arc<Liveness>) -> StatusCode {
        let probe = Probe {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(true)),
            liveness,
        };
        router(probe)
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn healthz_fails_when_queued_work_makes_no_progress() {
        // The old /healthz answered ok whatever the controller did.
        let idle = Arc::new(Liveness::new(Duration::from_millis(20)));
        assert_eq!(healthz(idle.clone()).await, StatusCode::OK);
        idle.triggered();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(healthz(idle.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
        idle.reconcile_started();
        idle.reconcile_finished();
        assert_eq!(healthz(idle).await, StatusCode::OK);
    }
}
