//! `POST /api/v1/notifications`: queue a robot notification (DingTalk custom
//! robot, Feishu custom bot, WeCom group robot). Admin keys only: it posts
//! into company chats.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::JsonBody;
use crate::im::Platform;
use crate::im::notify::{Notification, NotifyError};
use crate::state::AppState;

/// Platforms cap a message at about 20 KB; leave room for the envelope.
const MAX_TEXT: usize = 16 * 1024;
const MAX_TITLE: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyBody {
    pub channel: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NotifyBody>,
) -> ApiResult<Response> {
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "sending notifications needs an admin API key",
        )
        .with_code("admin_required"));
    }
    let platform = Platform::from_label(&body.channel)
        .filter(|p| *p != Platform::Slack)
        .ok_or_else(|| ApiError::invalid("channel", "channel must be dingtalk, feishu or wecom"))?;
    if body.text.trim().is_empty() || body.text.len() > MAX_TEXT {
        return Err(ApiError::invalid(
            "text",
            format!("text must be 1 to {MAX_TEXT} bytes"),
        ));
    }
    if body.title.len() > MAX_TITLE || body.title.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "title",
            format!("title must be at most {MAX_TITLE} bytes on one line"),
        ));
    }
    let n = Notification {
        title: body.title,
        text: body.text,
    };
    match st.notifier().enqueue(platform, n) {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"queued": true, "channel": platform.label()})),
        )
            .into_response()),
        Err(e @ NotifyError::NotConfigured(_)) => Err(ApiError::invalid("channel", e.to_string())),
        Err(e @ NotifyError::QueueFull(_)) => {
            st.metrics
                .notifications
                .with_label_values(&[platform.label(), "rejected"])
                .inc();
            Err(ApiError::too_many(e.to_string(), 60))
        }
    }
}
