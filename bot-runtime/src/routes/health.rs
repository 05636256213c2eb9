//! `/health`, `/health/live`, `/health/ready` and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;

use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn health(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "draining": st.drain.is_draining(),
        "model": {"backend": st.provider.label(), "name": st.cfg.model.name},
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
    let deps = dependencies(&st);
    let results = futures_util::future::join_all(deps.iter().map(|(_, addr)| probe(addr))).await;
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for ((name, _), result) in deps.iter().zip(results) {
        match result {
            Ok(()) => {
                checks.insert((*name).into(), json!("ok"));
            }
            Err(why) => {
                checks.insert((*name).into(), json!(format!("down: {why}")));
                failing.push(*name);
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

/// Configured network dependencies as (name, host:port).
fn dependencies(st: &AppState) -> Vec<(&'static str, String)> {
    let mut deps = Vec::new();
    if let Some(url) = &st.cfg.redis.url
        && let Some(addr) = host_port(url.expose(), 6379)
    {
        deps.push(("redis", addr));
    }
    if let Some(url) = &st.cfg.database.url {
        let default_port = if url.expose().starts_with("postgres") {
            5432
        } else {
            3306
        };
        if !url.expose().starts_with("sqlite")
            && let Some(addr) = host_port(url.expose(), default_port)
        {
            deps.push(("database", addr));
        }
    }
    deps
}

/// `scheme://user:pass@host:port/db?x` -> `host:port`.
fn host_port(url: &str, default_port: u16) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let port = u.port().unwrap_or(default_port);
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

async fn probe(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err("no answer within 1 s".into()),
        Ok(Err(e)) => Err(e.kind().to_string()),
        Ok(Ok(_)) => Ok(()),
    }
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    st.metrics.sessions.set(st.sessions.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_host_and_port_without_credentials() {
        assert_eq!(
            host_port("redis://:pw@cache:6380/0", 6379).as_deref(),
            Some("cache:6380")
        );
        assert_eq!(
            host_port("redis://cache", 6379).as_deref(),
            Some("cache:6379")
        );
        assert_eq!(
            host_port("postgres://u:p@[::1]/db", 5432).as_deref(),
            Some("[::1]:5432")
        );
        assert_eq!(host_port("not a url", 1), None);
    }
}
