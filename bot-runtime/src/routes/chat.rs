//! `POST /api/v1/chat` and `GET /api/v1/sessions/{id}/messages`: the
//! session-keeping chat API behind the web page.

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::chat::engine::{CallObserver, session_request};
use crate::chat::model::{ChunkStream, ModelError, Source, Usage};
use crate::chat::sessions::{
    Role, SessionError, SessionInfo, StoredMessage, Turn, is_valid_session_id,
};
use crate::convlog::Exchange;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::JsonBody;
use crate::state::AppState;
use crate::telemetry::metrics::StreamGauge;

const MAX_USER_ID: usize = 256;
/// How long a history read waits for just-answered exchanges to reach the
/// log database before reading what is there.
const LOG_FLUSH_WAIT: Duration = Duration::from_secs(2);

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
    /// The FAQ entry or dialog rule that answered, when no model did.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
}

#[derive(Serialize)]
pub struct MessagesReply {
    session_id: String,
    messages: Vec<StoredMessage>,
    /// Logged text that could not be decrypted (its message is empty):
    /// which exchange, which field, why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    field_errors: Vec<serde_json::Value>,
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
        SessionError::Unavailable(why) => ApiError::unavailable(format!(
            "the session store (Redis) is unavailable ({why}); retry shortly"
        ))
        .with_code("redis_unavailable"),
        SessionError::LockLost => ApiError::unavailable(
            "this turn lost its session lock (Redis) before its answer was recorded; send the message again",
        )
        .with_code("session_lock_lost"),
    }
}

fn check_session_id(id: &str) -> ApiResult<()> {
    if is_valid_session_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "session_id",
            "session_id must be 32 lowercase hex digits, as returned by this API",
        ))
    }
}

/// A session the caller may use: unknown ids and other keys' sessions look
/// the same (404), so ids cannot be probed.
pub async fn owned_session(st: &AppState, caller: &Caller, id: &str) -> ApiResult<SessionInfo> {
    check_session_id(id)?;
    let s = st.sessions.get(id).await.map_err(session_error)?;
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
    let max = st.cfg.sessions.max_message_bytes;
    if body.message.len() > max {
        return Err(ApiError::invalid(
            "message",
            format!(
                "message is {} bytes; at most {max} are accepted (sessions.max_message_bytes)",
                body.message.len()
            ),
        ));
    }
    if let Some(u) = &body.user_id
        && (u.is_empty() || u.len() > MAX_USER_ID || u.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "user_id",
            "user_id must be 1 to 256 printable characters",
        ));
    }
    if let Some(id) = &body.session_id {
        check_session_id(id)?;
    }
    // Access is checked inside: other keys' sessions are 404, like unknown ones.
    let turn = st
        .sessions
        .begin_turn(body.session_id.as_deref(), &caller, body.user_id.clone())
        .await
        .map_err(session_error)?;
    let req = session_request(&st.cfg.model, &turn.history, &body.message);
    let obs = st.observe_call("web", Some(turn.session.id.clone()));
    if body.stream {
        // Failures before the first token still get a real status code.
        return match st.bot.stream(&req).await {
            Ok(stream) => Ok(stream_reply(st, turn, obs, stream, req.model, body.message)),
            Err(e) => {
                obs.finish(&req.model, Err(&e));
                Err(e.into())
            }
        };
    }
    let result = st.bot.complete(&req).await;
    match result {
        Ok(done) => {
            let ex = web_exchange(
                &obs,
                &turn.session,
                &done.model,
                done.usage,
                &body.message,
                &done.content,
            );
            obs.finish(&done.model, Ok(done.usage));
            let session_id = turn.session.id.clone();
            turn.finish(body.message, done.content.clone())
                .await
                .map_err(session_error)?;
            // Queued (or spilled) before the client has the reply.
            st.logs.submit(ex).await;
            Ok(Json(ChatReply {
                session_id,
                reply: done.content,
                model: done.model,
                usage: done.usage.unwrap_or_default(),
                source: done.source,
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
    turn: Turn,
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
        let mut source = None;
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
                    if chunk.source.is_some() {
                        source = chunk.source.clone();
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
        let ex = web_exchange(&obs, &turn.session, &model, usage, &message, &reply);
        obs.finish(&model, Ok(usage));
        let session_id = turn.session.id.clone();
        if let Err(e) = turn.finish(message, reply.clone()).await {
            let _ = tx
                .send(json_event("error", &session_error(e).body_json()))
                .await;
            return;
        }
        // Queued (or spilled) before the client sees `done`.
        st.logs.submit(ex).await;
        let done = ChatReply {
            session_id,
            reply,
            model,
            usage: usage.unwrap_or_default(),
            source,
        };
        let _ = tx.send(json_event("done", &done)).await;
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    // X-Accel-Buffering: a proxy that buffers by default (nginx) passes
    // this stream through token by token, as on /v1/chat/completions.
    (
        [(header::HeaderName::from_static("x-accel-buffering"), "no")],
        Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
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

/// The log record of a web-chat answer.
fn web_exchange(
    obs: &CallObserver,
    session: &SessionInfo,
    model: &str,
    usage: Option<Usage>,
    message: &str,
    reply: &str,
) -> Exchange {
    let mut ex = obs.exchange(model, usage, message.to_owned(), reply.to_owned());
    ex.user_id = session.user_id.clone();
    ex.owner = session.owner.clone();
    ex
}

/// A session's history from the conversation log (kept beyond the session
/// store's TTL). A session with nothing logged yet, or a log database that
/// does not answer, falls back to the live session store.
pub async fn messages(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<MessagesReply>> {
    check_session_id(&id)?;
    // Read-your-writes: an exchange answered a moment ago may still be queued.
    st.logs.flush(LOG_FLUSH_WAIT).await;
    let store = st.logs.store();
    let logged = match store.session_owner(&id).await {
        Ok(Some(owner)) => {
            // Other keys' sessions look unknown (404), so ids cannot be probed.
            if !caller.may_access(owner.as_deref()) {
                return Err(session_error(SessionError::NotFound));
            }
            store.session_exchanges(&id).await.map(Some)
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let exchanges = match logged {
        Ok(Some(rows)) => rows,
        Ok(None) => return live_messages(&st, &caller, &id).await,
        Err(e) => {
            tracing::warn!(error = %e, "conversation log read failed; answering from the session store");
            return live_messages(&st, &caller, &id).await;
        }
    };
    let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let mut field_errors = Vec::new();
    let messages = exchanges
        .into_iter()
        .flat_map(|row| {
            let (e, errors) = row.opened(st.logs.keyring());
            field_errors.extend(errors.into_iter().map(
                |f| serde_json::json!({"exchange_id": e.id, "field": f.field, "error": f.error}),
            ));
            [
                StoredMessage {
                    role: Role::User,
                    created_at: at(e.created_at - e.latency_ms),
                    error: None,
                    content: e.user_input,
                },
                StoredMessage {
                    role: Role::Assistant,
                    created_at: at(e.created_at),
                    error: None,
                    content: e.bot_response,
                },
            ]
        })
        .collect();
    Ok(Json(MessagesReply {
        session_id: id,
        messages,
        field_errors,
    }))
}

async fn live_messages(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Json<MessagesReply>> {
    let s = owned_session(st, caller, id).await?;
    let messages = st.sessions.messages(&s.id).await.map_err(session_error)?;
    Ok(Json(MessagesReply {
        session_id: s.id,
        messages,
        field_errors: Vec::new(),
    }))
}
