//! Reads a bot's own `/health/ready` through its Service, which is how the
//! operator judges a Redis or database it does not run (spec.*.external).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Plain HTTP: the probe goes to the bot's in-cluster Service.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub use crate::status::Check;

#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub redis: Check,
    pub database: Check,
}

impl Readiness {
    pub fn unknown(why: &str) -> Self {
        Readiness {
            redis: Check::Unknown(why.to_owned()),
            database: Check::Unknown(why.to_owned()),
        }
    }
}

/// Reads `{"checks": {"redis": "ok", "database": "down: ..."}}`.
pub fn parse(body: &Value) -> Readiness {
    let check = |name: &str| match body.get("checks").and_then(|c| c.get(name)) {
        Some(Value::String(s)) if s == "ok" => Check::Ok,
        Some(Value::String(s)) => Check::Down(s.strip_prefix("down: ").unwrap_or(s).to_owned()),
        _ => Check::Unknown(format!("/health/ready reported no {name} check")),
    };
    Readiness {
        redis: check("redis"),
        database: check("database"),
    }
}

/// `base` is the bot's URL, e.g. http://bot.ns.svc:18789.
pub async fn read(http: &HttpClient, base: &str) -> Readiness {
    let url = format!("{base}/health/ready");
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Readiness::unknown(&format!("{url}: {e}")),
    };
    let fetch = async {
        let resp = http.get(uri).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Value>(&body.to_bytes()).map_err(|e| format!("no JSON: {e}"))
    };
    match tokio::time::timeout(Duration::from_secs(3), fetch).await {
        Err(_) => Readiness::unknown(&format!("{url} did not answer within 3 s")),
        Ok(Err(e)) => Readiness::unknown(&format!("cannot read {url}: {e}")),
        Ok(Ok(v)) => parse(&v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_answers_are_read() {
        let r = parse(&json!({"status": "unavailable", "failing": ["redis"],
            "checks": {"redis": "down: connection refused", "database": "ok"}}));
        assert_eq!(r.redis, Check::Down("connection refused".into()));
        assert_eq!(r.database, Check::Ok);
        assert!(matches!(parse(&json!({})).redis, Check::Unknown(_)));
    }
}
