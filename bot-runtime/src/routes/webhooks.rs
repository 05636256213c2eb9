//! `POST /webhooks/{dingtalk,feishu,wecom,slack}` and `GET /webhooks/wecom`:
//! read the raw body (bounded), verify it, record the message durably, ack.
//! The answer goes out later through the platform's API.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::im::{Accepted, InboundSink, Platform, Rejection, SinkError, Verdict};
use crate::state::AppState;
use crate::support::timefmt::now_ms;

pub async fn dingtalk(st: State<AppState>, q: RawQuery, h: HeaderMap, body: Body) -> Response {
    post(st, Platform::Dingtalk, q, h, body).await
}

pub async fn feishu(st: State<AppState>, q: RawQuery, h: HeaderMap, body: Body) -> Response {
    post(st, Platform::Feishu, q, h, body).await
}

pub async fn wecom(st: State<AppState>, q: RawQuery, h: HeaderMap, body: Body) -> Response {
    post(st, Platform::Wecom, q, h, body).await
}

pub async fn slack(st: State<AppState>, q: RawQuery, h: HeaderMap, body: Body) -> Response {
    post(st, Platform::Slack, q, h, body).await
}

/// WeCom's URL verification: answer the decrypted `echostr` as plain text.
pub async fn wecom_verify(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let Some(result) = st
        .verifiers
        .verify_wecom_url(q.as_deref().unwrap_or_default(), now_ms())
    else {
        return not_enabled(Platform::Wecom);
    };
    respond(&st, Platform::Wecom, result).await
}

async fn post(
    State(st): State<AppState>,
    p: Platform,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !st.verifiers.enabled(p) {
        return not_enabled(p);
    }
    // Draining: the platform retries, and another replica takes it.
    if st.drain.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this replica is shutting down",
        );
    }
    let _work = st.drain.track();
    let limit = st.cfg.channels.body_limit_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(&st, p, limit);
    }
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(&st, p, limit),
    };
    let Some(result) = st.verifiers.verify_post(
        p,
        &headers,
        q.as_deref().unwrap_or_default(),
        &bytes,
        now_ms(),
    ) else {
        return not_enabled(p);
    };
    // DingTalk: the message is recorded with its signature bound to it.
    match result {
        Ok(Verdict::Message(m)) => match st.verifiers.signature_binding(p, &headers) {
            Some(binding) => acked(p, st.deliveries.accept_signed(*m, binding).await),
            None => acked(p, st.deliveries.accept(*m).await),
        },
        result => respond(&st, p, result).await,
    }
}

async fn respond(st: &AppState, p: Platform, result: Result<Verdict, Rejection>) -> Response {
    let channel = p.label();
    match result {
        Err(rej) => {
            st.metrics.webhook(channel, rej.outcome());
            tracing::info!(channel, outcome = rej.outcome(), reason = %rej, "webhook refused");
            error(rej.status(), rej.outcome(), &rej.to_string())
        }
        Ok(Verdict::Handshake { content_type, body }) => {
            st.metrics.webhook(channel, "handshake");
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Verdict::Ignored(why)) => {
            st.metrics.webhook(channel, "ignored");
            tracing::debug!(channel, why, "webhook acknowledged, nothing to answer");
            ack(p)
        }
        Ok(Verdict::Message(m)) => acked(p, st.deliveries.accept(*m).await),
    }
}

/// The answer once the sink has had the message (it counts accepted /
/// duplicate / replayed / unavailable itself, for long connections too).
fn acked(p: Platform, recorded: Result<Accepted, SinkError>) -> Response {
    match recorded {
        Ok(Accepted::New | Accepted::Duplicate) => ack(p),
        Ok(Accepted::Replayed) => {
            let rej = Rejection::Replayed;
            tracing::info!(channel = p.label(), outcome = rej.outcome(), reason = %rej, "webhook refused");
            error(rej.status(), rej.outcome(), &rej.to_string())
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the delivery could not be recorded; retry later",
        ),
    }
}

/// The success answer each platform expects.
fn ack(p: Platform) -> Response {
    match p {
        // WeCom takes an empty body (or "success") as "received".
        Platform::Wecom => (StatusCode::OK, "").into_response(),
        Platform::Slack => StatusCode::OK.into_response(),
        Platform::Dingtalk | Platform::Feishu => axum::Json(json!({})).into_response(),
    }
}

fn too_large(st: &AppState, p: Platform, limit: usize) -> Response {
    st.metrics.webhook(p.label(), "malformed");
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("body is larger than channels.body_limit_bytes ({limit} bytes)"),
    )
}

fn not_enabled(p: Platform) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_enabled",
        &format!("the {} webhook is not enabled on this server", p.label()),
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": "webhook_error", "code": code}})),
    )
        .into_response()
}
