//! Which address a request comes from. `X-Forwarded-For` is only believed
//! when the peer is a trusted proxy, and then we take the rightmost address
//! that is not itself a trusted proxy: addresses left of it are whatever the
//! client chose to send.

use std::net::IpAddr;

use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last_trusted = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => last_trusted = ip,
            Ok(ip) => return ip,
            // A malformed hop: stop believing the header here.
            Err(_) => return last_trusted,
        }
    }
    last_trusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_claim_another_address() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("1.2.3.4"), Some("9.9.9.9"), &t), ip("1.2.3.4"));
    }

    #[test]
    fn trusted_proxy_names_the_client() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("203.0.113.7"), &t),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn spoofed_left_entries_are_ignored() {
        let t = nets(&["10.0.0.0/8"]);
        let got = client_ip(ip("10.0.0.5"), Some("6.6.6.6, 203.0.113.7, 10.1.1.1"), &t);
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn garbage_or_missing_header_falls_back_to_the_proxy() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("nonsense"), &t),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(ip("10.0.0.5"), None, &t), ip("10.0.0.5"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("10.2.2.2"), &t),
            ip("10.2.2.2")
        );
    }
}
