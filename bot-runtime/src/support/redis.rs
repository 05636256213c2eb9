//! The one way this crate opens a Redis client: from `redis.url`, with
//! TCP_NODELAY on, as most Redis clients do (redis-rs leaves it off).
//! Without it, a command written while an earlier one on the same
//! multiplexed connection is still unacknowledged may wait in the kernel
//! for that reply (Nagle).

use redis::IntoConnectionInfo;

/// The error names what is wrong with the URL, never the URL (it may hold
/// a password).
pub fn open(url: &str) -> anyhow::Result<redis::Client> {
    let unusable =
        |e: redis::RedisError| anyhow::anyhow!("redis.url is not usable ({})", e.category());
    let info = url.into_connection_info().map_err(unusable)?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp)).map_err(unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodelay_is_on_and_the_url_is_never_echoed() {
        let c = open("redis://:hunter2@127.0.0.1:6379/3").unwrap();
        assert!(c.get_connection_info().tcp_settings().nodelay());
        let e = open("redis://:hunter2@[bad/3").unwrap_err().to_string();
        assert!(e.starts_with("redis.url is not usable"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
