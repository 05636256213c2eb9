//! `/health`, `/health/live`, `/health/ready` and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn health(State(st): State<AppState>) -> Json<Value> {
    let index = st.knowledge.index();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "draining": st.drain.is_draining(),
        // "open": no API keys, anyone who reaches the port may use the API.
        "auth": if st.keys.is_open() { "open" } else { "keys" },
        "model": {
            "backend": st.provider.label(),
            "name": st.cfg.model.name,
            "models": st.provider.models(),
            "reason": st.provider.reason(),
        },
        "knowledge": {
            "path": st.knowledge.folder().map(|p| p.display().to_string()),
            "entries": index.len(),
            "files": index.files,
            "skipped": index.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
    }))
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn ready(State(st): State<AppState>) -> Response {
    if st.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "failing": ["shutdown"]})),
        )
            .into_response();
    }
    // Both get a real round trip through their store's own connections:
    // what requests need, not just an open port.
    let (redis, database) = tokio::join!(st.sessions.check(), database_check(&st));
    let outcomes = redis
        .map(|r| ("redis", r.map_err(|e| e.to_string())))
        .into_iter()
        .chain(std::iter::once(("database", database)));
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for (name, result) in outcomes {
        match result {
            Ok(()) => {
                checks.insert(name.into(), json!("ok"));
            }
            Err(why) => {
                checks.insert(name.into(), json!(format!("down: {why}")));
                failing.push(name);
            }
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if failing.is_empty() {
        "ok"
    } else {
        "unavailable"
    };
    (
        status,
        Json(json!({"status": word, "failing": failing, "checks": checks})),
    )
        .into_response()
}

/// `SELECT 1` on the conversation log database (the embedded SQLite file
/// included: a full disk or a removed directory shows here too).
async fn database_check(st: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, st.logs.store().ping()).await {
        Err(_) => Err("no answer within 1 s".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(())) => Ok(()),
    }
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    if let Some(n) = st.sessions.held_in_memory() {
        st.metrics.sessions.set(n as i64);
    }
    // Read at scrape time: a breaker opens and closes on its own clock.
    for (endpoint, open) in st.provider.circuits() {
        st.metrics
            .model_circuit_open
            .with_label_values(&[st.provider.label(), endpoint.as_str()])
            .set(i64::from(open));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
