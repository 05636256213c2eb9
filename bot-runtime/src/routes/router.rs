//! The router and its cross-cutting layers: request ids, logging and
//! metrics around everything; drain, rate limit and API keys around the
//! API; CORS and the body limit outside.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::http::client_ip::client_ip;
use crate::http::error::ApiError;
use crate::routes::{chat, conversations, health, notifications, openai, web, webhooks};
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// The main router. `/metrics` is on it only when `server.metrics_listen`
/// does not give metrics a listener of their own (see `metrics_router`).
pub fn router(st: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/chat", post(chat::chat))
        .route("/api/v1/sessions/{id}/messages", get(chat::messages))
        .route("/api/v1/conversations", get(conversations::list))
        .route("/api/v1/notifications", post(notifications::create))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route_layer(middleware::from_fn_with_state(st.clone(), api_guard));
    let mut app = Router::new()
        .route("/", get(web::index))
        .route("/assets/marked.umd.js", get(web::marked))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    if st.cfg.server.metrics_listen.is_none() {
        app = app.route("/metrics", get(health::metrics));
    }
    let mut app = app
        .merge(api)
        // Authenticated by the platforms' signatures, not API keys; bodies
        // are read raw and bounded by `channels.body_limit_bytes`.
        .route("/webhooks/dingtalk", post(webhooks::dingtalk))
        .route("/webhooks/feishu", post(webhooks::feishu))
        .route(
            "/webhooks/wecom",
            get(webhooks::wecom_verify).post(webhooks::wecom),
        )
        .route("/webhooks/slack", post(webhooks::slack))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(st.clone(), observe))
        .layer(DefaultBodyLimit::max(
            st.cfg.server.body_limit_bytes as usize,
        ));
    if let Some(cors) = cors_layer(&st.cfg.server.cors_allowed_origins) {
        app = app.layer(cors);
    }
    app.with_state(st)
}

/// `/metrics` alone, for the listener `server.metrics_listen` names: what
/// Prometheus scrapes never shares a port (or an ingress path) with chat.
pub fn metrics_router(st: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(st)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                X_REQUEST_ID.clone(),
            ])
            .expose_headers([X_REQUEST_ID.clone(), header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// A caller-sent id is kept when it is short and printable, so ids can be
/// followed across services; otherwise we make one.
fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>()))
                .expect("hex is a valid header")
        })
}

async fn observe(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %method,
        route = %route,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = resp.status();
    let stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    st.metrics
        .http_duration
        .with_label_values(&[
            route.as_str(),
            method.as_str(),
            status.as_str(),
            if stream { "true" } else { "false" },
        ])
        .observe(elapsed.as_secs_f64());
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    let quiet = route.starts_with("/health") || route == "/metrics";
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                latency_us = elapsed.as_micros() as u64,
                "request failed"
            );
        } else if quiet {
            tracing::debug!(
                status = status.as_u16(),
                latency_us = elapsed.as_micros() as u64,
                "request"
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                latency_us = elapsed.as_micros() as u64,
                "request"
            );
        }
    });
    resp
}

/// Admission for `/api/*` and `/v1/*`: refuse while draining, rate-limit
/// per client, throttle clients that keep sending bad keys, then check the key.
async fn api_guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if st.drain.is_draining() {
        let mut resp =
            ApiError::unavailable("the server is shutting down; retry on another replica")
                .with_code("shutting_down")
                .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, xff, &st.trusted_proxies);
    if let Err(wait) = st.limiter.check(ip) {
        st.metrics
            .rate_limited
            .with_label_values(&["requests"])
            .inc();
        return ApiError::too_many("too many requests from this client; slow down", wait)
            .into_response();
    }
    if let Err(wait) = st.auth_throttle.check(ip) {
        st.metrics
            .rate_limited
            .with_label_values(&["auth_failures"])
            .inc();
        return ApiError::too_many(
            "too many failed authentication attempts from this client",
            wait,
        )
        .into_response();
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match st.keys.authenticate(auth) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
        }
        Err(failure) => {
            st.auth_throttle.record_failure(ip);
            st.metrics
                .auth_failures
                .with_label_values(&[failure.label()])
                .inc();
            tracing::info!(client = %ip, reason = failure.label(), "authentication failed");
            let mut resp = ApiError::unauthorized(failure.message()).into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let _work = st.drain.track();
    next.run(req).await
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route for {method} {}", uri.path()),
    )
    .with_code("unknown_route")
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .with_code("method_not_allowed")
}
