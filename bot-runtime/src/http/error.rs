//! One error type for every HTTP answer that is not a success, rendered in
//! OpenAI's shape `{"error":{"message","type","param","code"}}` on every
//! route so clients need one parser.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::chat::model::ModelError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after_secs: None,
        }
    }

    /// 400 for a request field that is missing or wrong.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message).with_code("not_found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
            .with_code("invalid_api_key")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            message,
        )
    }

    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("rate_limit_exceeded");
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body alone, for SSE `error` events.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Detail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or_default()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let (status, kind, code) = match &e {
            ModelError::Busy { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "model_busy",
            ),
            ModelError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "model_unavailable",
            ),
            ModelError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "model_timeout",
            ),
            ModelError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "upstream_error", "model_error"),
            ModelError::Rejected { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "model_rejected_request",
            ),
        };
        let mut out = Self::new(status, kind, e.to_string()).with_code(code);
        if let ModelError::Busy {
            retry_after_secs, ..
        } = e
        {
            out.retry_after_secs = Some(retry_after_secs.max(1));
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body_json())).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
