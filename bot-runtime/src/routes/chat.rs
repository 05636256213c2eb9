//! `POST /api/v1/chat` and `GET /api/v1/sessions/{id}/messages`: the
//! session-keeping chat API behind the web page.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::engine::{CallObserver, session_request};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::metrics::StreamGauge;
use crate::model::{ChunkStream, ModelError, Usage};
use crate::sessions::{Session, SessionError, StoredMessage, TurnGuard, is_valid_session_id};
use crate::state::AppState;

const MAX_USER_ID: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    message: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    stream: bool,
}

#[derive(Serialize)]
pub struct ChatReply {
    session_id: String,
    reply: String,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
pub struct MessagesReply {
    session_id: String,
    messages: Vec<StoredMessage>,
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::not_found("unknown or expired session")
            .with_param("session_id")
            .with_code("session_not_found"),
        SessionError::Busy => ApiError::new(
            StatusCode::CONFLICT,
            "conflict_error",
            "the previous message in this session is still being answered; retry when it is done",
        )
        .with_param("session_id")
        .with_code("session_busy"),
        SessionError::Full => ApiError::unavailable(
            "the server holds as many sessions as it may (sessions.max_sessions)",
        )
        .with_code("session_capacity"),
    }
}

/// A session the caller may use: unknown ids and other keys' sessions look
/// the same (404), so ids cannot be probed.
fn owned_session(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Arc<Session>> {
    if !is_valid_session_id(id) {
        return Err(ApiError::invalid(
            "session_id",
            "session_id must be 32 lowercase hex digits, as returned by this API",
        ));
    }
    let s = st.sessions.get(id).map_err(session_error)?;
    if !caller.may_access(s.owner.as_deref()) {
        return Err(session_error(SessionError::NotFound));
    }
    Ok(s)
}

pub async fn chat(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ChatBody>,
) -> ApiResult<Response> {
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid("message", "message must not be empty"));
    }
    if let Some(u) = &body.user_id
        && (u.is_empty() || u.len() > MAX_USER_ID || u.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "user_id",
            "user_id must be 1 to 256 printable characters",
        ));
    }
    let session = match &body.session_id {
        Some(id) => owned_session(&st, &caller, id)?,
        None => st
            .sessions
            .create(caller.key_name.clone(), body.user_id.clone())
            .map_err(session_error)?,
    };
    let turn = st
        .sessions
        .begin_turn(session)
        .await
        .map_err(session_error)?;
    let history = turn.session.context(st.sessions.window());
    let req = session_request(&st, &history, &body.message);
    let obs = CallObserver::start(&st, "web", Some(turn.session.id.clone()));
    if body.stream {
        // Failures before the first token still get a real status code.
        return match st.provider.stream(&req).await {
            Ok(stream) => Ok(stream_reply(st, turn, obs, stream, req.model, body.message)),
            Err(e) => {
                obs.finish(&req.model, Err(&e));
                Err(e.into())
            }
        };
    }
    let result = st.provider.complete(&req).await;
    match result {
        Ok(done) => {
            obs.finish(&done.model, Ok(done.usage));
            st.sessions
                .append(&turn, body.message, done.content.clone());
            Ok(Json(ChatReply {
                session_id: turn.session.id.clone(),
                reply: done.content,
                model: done.model,
                usage: done.usage.unwrap_or_default(),
            })
            .into_response())
        }
        Err(e) => {
            obs.finish(&req.model, Err(&e));
            Err(e.into())
        }
    }
}

fn stream_reply(
    st: AppState,
    turn: TurnGuard,
    mut obs: CallObserver,
    mut stream: ChunkStream,
    mut model: String,
    message: String,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(32);
    let work = st.drain.track();
    tokio::spawn(async move {
        let _work = work;
        let _gauge = StreamGauge::start(&st.metrics.active_streams);
        let mut reply = String::new();
        let mut usage = None;
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = tx.closed() => return,
            };
            match next {
                None => break,
                Some(Ok(chunk)) => {
                    obs.on_chunk(&chunk);
                    if let Some(m) = chunk.model.as_deref().filter(|m| !m.is_empty()) {
                        m.clone_into(&mut model);
                    }
                    if chunk.usage.is_some() {
                        usage = chunk.usage;
                    }
                    if !chunk.content.is_empty() {
                        reply.push_str(&chunk.content);
                        let ev =
                            json_event("delta", &serde_json::json!({"content": chunk.content}));
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    obs.finish(&model, Err(&e));
                    let _ = tx.send(error_event(&e)).await;
                    return;
                }
            }
        }
        obs.finish(&model, Ok(usage));
        st.sessions.append(&turn, message, reply.clone());
        let done = ChatReply {
            session_id: turn.session.id.clone(),
            reply,
            model,
            usage: usage.unwrap_or_default(),
        };
        let _ = tx.send(json_event("done", &done)).await;
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn json_event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

fn error_event(e: &ModelError) -> Event {
    json_event("error", &ApiError::from(e.clone()).body_json())
}

pub async fn messages(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<MessagesReply>> {
    let s = owned_session(&st, &caller, &id)?;
    Ok(Json(MessagesReply {
        session_id: s.id.clone(),
        messages: s.messages(),
    }))
}
