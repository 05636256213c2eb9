//! JSON body extractor whose rejections name the problem and the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "the request body must be JSON with `Content-Type: application/json`",
            )
            .with_code("unsupported_media_type"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "the request body is larger than the server accepts (server.body_limit_bytes)",
                )
                .with_code("body_too_large")
            } else {
                ApiError::invalid("body", format!("cannot read the request body: {rej}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserializes and turns serde's error into a 400 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::invalid(
                "body",
                "the request body is empty; send a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "body",
                "the request body must be a JSON object",
            ));
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(
                "body",
                format!("the request body is not valid JSON: {inner}"),
            );
        }
        let param = param_of(&path, &inner.to_string());
        ApiError::invalid(param.clone(), format!("`{param}`: {inner}"))
    })
}

/// serde reports a missing or unknown field at its parent's path with the
/// name in backticks; join them so `param` names the field itself.
fn param_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(f)) => f.to_owned(),
        (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_owned(),
        (p, Some(f)) => format!("{p}.{f}"),
        (".", None) => "body".to_owned(),
        (p, None) => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        message: String,
        #[serde(default)]
        stream: bool,
    }

    fn err(body: &str) -> ApiError {
        parse_json::<Body>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn names_the_field() {
        assert_eq!(err("{}").param.as_deref(), Some("message"));
        assert_eq!(err(r#"{"message": 5}"#).param.as_deref(), Some("message"));
        assert_eq!(
            err(r#"{"message": "x", "stream": "yes"}"#).param.as_deref(),
            Some("stream")
        );
        assert_eq!(
            err(r#"{"message": "x", "mesage": 1}"#).param.as_deref(),
            Some("mesage")
        );
        assert_eq!(err("{nope").param.as_deref(), Some("body"));
        assert_eq!(err("").param.as_deref(), Some("body"));
        assert_eq!(err("[]").param.as_deref(), Some("body"));
    }
}
