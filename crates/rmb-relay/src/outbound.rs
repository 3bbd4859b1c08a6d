//! The federation HTTP client: posting an envelope to a relay run by someone else.
//!
//! Which relay we post to is chosen by whoever registered the destination twin, and the
//! answer comes from whoever runs that relay, so both are hostile:
//! - no redirects are followed (a 303 would turn our POST into a GET to any URL), and no
//!   proxy from the environment is used;
//! - loopback, private, link-local and other non-public addresses are refused unless the
//!   operator allows them ([`Config::federation_allow_private`]), both for IP literals and
//!   for every address a host name resolves to (checked in the resolver reqwest connects
//!   with, so a name cannot resolve differently between our check and the connection);
//! - of a refusal's body only the first [`MAX_REASON_BYTES`] are read, and what reaches
//!   our sender is printable ASCII, at most [`MAX_REASON_CHARS`] characters.
//!
//! [`Config::federation_allow_private`]: crate::config::Config::federation_allow_private

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Bytes of a refusing relay's body read, at most.
pub const MAX_REASON_BYTES: usize = 512;
/// Characters of a refusing relay's reason passed on to our sender, at most.
pub const MAX_REASON_CHARS: usize = 200;

/// How one post went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 202: the relay took it.
    Accepted,
    /// Another 4xx: the relay is up and will not take this envelope; final.
    Refused(String),
    /// Anything else (timeout, connection refused, 5xx, a redirect): try another relay.
    Failed(String),
}

/// The client every federation post goes through.
pub fn client(connect_timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PublicResolver { allow_private }))
        .build()
}

/// Posts `body` to `{scheme}://{relay}/`, waiting at most `timeout`.
pub async fn post(
    http: &reqwest::Client,
    scheme: &str,
    relay: &str,
    allow_private: bool,
    body: Bytes,
    timeout: Duration,
) -> Attempt {
    if !allow_private {
        if let Some(ip) = literal_ip(relay).filter(|ip| !is_public(*ip)) {
            return Attempt::Failed(format!("not tried: {ip} is a {}", PRIVATE));
        }
    }
    let url = format!("{scheme}://{relay}/");
    let response = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let mut response = match response {
        Err(e) if e.is_timeout() => return Attempt::Failed("timeout".into()),
        Err(e) => return Attempt::Failed(format!("unreachable ({})", error_chain(&e))),
        Ok(r) => r,
    };
    let status = response.status();
    if status == StatusCode::ACCEPTED {
        return Attempt::Accepted;
    }
    if status.is_redirection() {
        return Attempt::Failed(format!("HTTP {status}: redirects are not followed"));
    }
    if !status.is_client_error() {
        return Attempt::Failed(format!("HTTP {status}"));
    }
    let mut head = Vec::new();
    while head.len() < MAX_REASON_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(MAX_REASON_BYTES);
    let reason = sanitize(&String::from_utf8_lossy(&head));
    Attempt::Refused(format!("{status} {reason}").trim_end().to_string())
}

/// What a refused address is called in messages (tests look for "private").
const PRIVATE: &str = "loopback, private or otherwise non-public address (federating there needs --federation-allow-private)";

/// The error and its sources, for a message (reqwest's own text alone says little).
fn error_chain(e: &reqwest::Error) -> String {
    // reqwest's own text carries the URL; the relay is named by the caller already.
    let mut text = String::from(if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    sanitize(&text)
}

/// Printable ASCII only, runs of anything else or whitespace as one space, at most
/// [`MAX_REASON_CHARS`] characters.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in text.chars() {
        if c.is_ascii_graphic() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
        if out.len() >= MAX_REASON_CHARS {
            out.push_str("...");
            break;
        }
    }
    out
}

/// The IP of a relay name that is an IP literal (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`).
fn literal_ip(relay: &str) -> Option<IpAddr> {
    if let Ok(addr) = relay.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    relay
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// True for an address on the public Internet: not loopback, private (RFC 1918, unique
/// local), link-local, shared (CGNAT), unspecified, broadcast, multicast, documentation
/// or benchmarking, and the same for an IPv4 address mapped into IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// Resolves like the system does, then keeps only public addresses (unless allowed).
struct PublicResolver {
    allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if usable.is_empty() && !found.is_empty() {
                return Err(format!("{host} resolves only to a {PRIVATE}").into());
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "185.69.166.1",
            "2a02:1802:5e::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_ips_in_relay_names() {
        assert_eq!(literal_ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            literal_ip("10.0.0.1:8080"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("relay.grid.tf"), None);
        assert_eq!(literal_ip("relay.grid.tf:443"), None);
    }

    #[test]
    fn reasons_are_short_and_printable() {
        assert_eq!(sanitize("  bad\r\n\x1b[2J request\x00 "), "bad [2J request");
        let long = sanitize(&"x".repeat(10_000));
        assert_eq!(long.len(), MAX_REASON_CHARS + 3);
        assert_eq!(sanitize("destination offline"), "destination offline");
    }
}
