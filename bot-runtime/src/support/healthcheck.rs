//! `bot-runtime healthcheck`: asks the running server's `/health/ready`,
//! for a container image's HEALTHCHECK (distroless images have no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The readiness URL of a server listening on `listen`. A wildcard address
/// (`0.0.0.0`, `::`) is reached on the loopback of the same family.
pub fn ready_url(listen: &str) -> Result<String, String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("server.listen {listen:?} is not an address like 0.0.0.0:18789"))?;
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}/health/ready",
        SocketAddr::new(ip, addr.port())
    ))
}

/// Ok when `url` answers 2xx within `timeout`; Err says what it got.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!("{url}: {status} {}", body.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_asked_on_loopback() {
        assert_eq!(
            ready_url("0.0.0.0:18789").unwrap(),
            "http://127.0.0.1:18789/health/ready"
        );
        assert_eq!(
            ready_url("[::]:8080").unwrap(),
            "http://[::1]:8080/health/ready"
        );
        assert_eq!(
            ready_url("10.1.2.3:18789").unwrap(),
            "http://10.1.2.3:18789/health/ready"
        );
        assert!(
            ready_url("localhost:x")
                .unwrap_err()
                .contains("server.listen")
        );
    }
}
